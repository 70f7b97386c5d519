"""Who sees a restored copy: only actors allowed litestream-restore AND view-database on the live
database it came from. A copy must not leak what a rule on the live database hides."""

import asyncio
import datetime
import re
import sqlite3

import pytest
from conftest import make_db, utcnow, wait_synced


def config_for(tmp_path, **extra):
    return {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/r/$DB_NAME"]}}, **extra}


async def restore(ds, actor):
    """Restore `data` as `actor` as of a time between its first replicated state (3 users) and a
    later write (a 4th user); returns the copy's name."""
    await wait_synced(ds)
    await asyncio.sleep(1.1)
    conn = sqlite3.connect(ds.databases["data"].path)
    conn.execute("INSERT INTO users(name) VALUES ('later')")
    conn.commit()
    conn.close()
    await wait_synced(ds, after=utcnow())
    page = await ds.client.get("/-/litestream-restore", actor=actor)
    span = re.search(r'litestream-from">([^<]+)</span> to <span class="litestream-to">([^<]+)<', page.text)
    start, end = (datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in span.groups())
    when = (start + (end - start) / 2).isoformat()
    r = await ds.client.post("/-/litestream-restore", actor=actor, data={"database": "data", "timestamp": when})
    assert r.status_code == 302, r.text
    name = r.headers["location"].lstrip("/")
    assert name.startswith("data_at_") and name in ds.databases
    return name


def copy_paths(name):
    return [
        f"/{name}",
        f"/{name}.json",
        f"/{name}/users",
        f"/{name}/users.json",
        f"/{name}/users/1.json",
        f"/{name}/-/query.json?sql=select+name+from+users",
        f"/{name}/-/query?sql=select+name+from+users",
        f"/{name}.db",
    ]


async def index_names(ds, actor, path="/.json"):
    r = await ds.client.get(path, actor=actor)
    assert r.status_code == 200
    return [d["name"] for d in r.json()["databases"]]


async def assert_can_see(ds, actor, name):
    rows = (await ds.client.get(f"/{name}/users.json?_shape=array", actor=actor)).json()
    assert [row["name"] for row in rows] == ["user 0", "user 1", "user 2"]
    r = await ds.client.get(f"/{name}/-/query.json?sql=select+count(*)+as+n+from+users&_shape=array", actor=actor)
    assert r.status_code == 200 and r.json() == [{"n": 3}], r.text
    assert (await ds.client.get(f"/{name}", actor=actor)).status_code == 200
    assert name in await index_names(ds, actor)
    assert name in await index_names(ds, actor, "/-/databases.json")


async def assert_cannot_see(ds, actor, name):
    for path in copy_paths(name):
        r = await ds.client.get(path, actor=actor)
        assert r.status_code == 403, (actor, path, r.status_code)
        assert "user 0" not in r.text
    assert name not in await index_names(ds, actor)
    assert name not in await index_names(ds, actor, "/-/databases.json")
    assert name not in (await ds.client.get("/", actor=actor)).text


@pytest.mark.asyncio
async def test_copy_follows_the_live_database_and_the_restore_action(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    config = config_for(
        tmp_path,
        databases={"data": {"allow": {"id": "alice"}}},
        permissions={"litestream-restore": {"id": ["alice", "bob"]}},
    )
    ds = await make_ds([db], config=config)
    alice, bob, carol = {"id": "alice"}, {"id": "bob"}, {"id": "carol"}
    name = await restore(ds, alice)

    await assert_can_see(ds, alice, name)
    # bob may restore but not view the live database; carol may do neither; nor may anonymous
    for actor in (bob, carol, None):
        assert (await ds.client.get("/data/users.json", actor=actor)).status_code == 403
        await assert_cannot_see(ds, actor, name)
    # root: not listed for litestream-restore, so denied it (and the copy) by that permissions block
    await assert_cannot_see(ds, {"id": "root"}, name)

    # bob's restore page does not name the database he cannot view, nor restore it for him
    page = await ds.client.get("/-/litestream-restore", actor=bob)
    assert page.status_code == 200 and 'data-database="data"' not in page.text
    r = await ds.client.post("/-/litestream-restore", actor=bob, data={"database": "data", "timestamp": utcnow().isoformat()})
    assert r.status_code == 400 and "is not a replicated database" in r.text
    assert [n for n in ds.databases if n.startswith("data_at_")] == [name]
    assert 'data-database="data"' in (await ds.client.get("/-/litestream-restore", actor=alice)).text


@pytest.mark.asyncio
async def test_copy_of_an_open_database_needs_the_restore_action(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    ds = await make_ds([db], config=config_for(tmp_path))
    root, plain = {"id": "root"}, {"id": "pat"}
    name = await restore(ds, root)
    # everyone may view the live database ...
    assert (await ds.client.get("/data/users.json", actor=plain)).status_code == 200
    assert (await ds.client.get("/data/users.json")).status_code == 200
    # ... but the copy only those allowed to restore
    await assert_can_see(ds, root, name)
    await assert_cannot_see(ds, plain, name)
    await assert_cannot_see(ds, None, name)


@pytest.mark.asyncio
async def test_a_table_rule_on_the_copy_does_not_reopen_it(tmp_path, make_ds):
    """A table-level allow outranks a database-level deny in Datasette; the plugin denies each
    table of a hidden copy too, so even a rule naming the copy's table cannot reopen it."""
    db = make_db(tmp_path / "data.db")
    ds = await make_ds([db], config=config_for(tmp_path))
    name = await restore(ds, {"id": "root"})
    ds.config.setdefault("databases", {})[name] = {"tables": {"users": {"allow": {"id": "pat"}}}}
    await ds.refresh_schemas()
    r = await ds.client.get(f"/{name}/users.json", actor={"id": "pat"})
    assert r.status_code == 403


@pytest.mark.asyncio
async def test_a_table_hidden_in_the_live_database_stays_hidden_in_the_copy(tmp_path, make_ds):
    """A copy inherits every rule naming its live database: a table-level rule too."""
    db = make_db(tmp_path / "data.db")
    ds = await make_ds([db], config=config_for(tmp_path, databases={"data": {"tables": {"users": {"allow": {"id": "alice"}}}}}))
    root = {"id": "root"}
    name = await restore(ds, root)
    for database in ("data", name):
        assert (await ds.client.get(f"/{database}/users.json", actor=root)).status_code == 403, database
        assert (await ds.client.get(f"/{database}/notes.json", actor=root)).status_code == 200, database
        assert (await ds.client.get(f"/{database}.json", actor=root)).status_code == 200, database
    assert (await ds.client.get("/data/users.json", actor={"id": "alice"})).status_code == 200
    # alice may see users in the live database, but may not restore: the copy stays closed to her
    await assert_cannot_see(ds, {"id": "alice"}, name)
