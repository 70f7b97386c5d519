"""The seed's question: how do I rewind to before I ran DELETE FROM users? Restore a copy as of a
time from the browser's form; it is attached read-only beside the untouched live database."""

import asyncio
import datetime
import re
import sqlite3

import pytest
from conftest import make_db, utcnow, wait_synced


@pytest.mark.asyncio
async def test_restore_a_copy_from_before_a_delete(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db", rows=5)
    config = {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/r/$DB_NAME"]}}}
    ds = await make_ds([db], config=config)
    token = await ds.create_token("root")
    headers = {"Authorization": f"Bearer {token}"}
    r = await ds.client.post("/data/users/-/insert", json={"rows": [{"name": "precious"}]}, headers=headers)
    assert r.status_code == 201
    await wait_synced(ds, after=utcnow())
    before_delete = utcnow()
    await asyncio.sleep(1.1)
    r = await ds.client.post("/data/-/execute-write", json={"sql": "DELETE FROM users"}, headers=headers)
    if r.status_code == 404:  # no JSON execute-write: use sqlite directly, as a mistaken script would
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM users")
        conn.commit()
    await wait_synced(ds, after=utcnow())
    assert sqlite3.connect(db).execute("select count(*) from users").fetchone()[0] == 0

    page = await ds.client.get("/-/litestream-restore", actor={"id": "root"})
    assert page.status_code == 200
    assert 'data-database="data"' in page.text and "covers" in page.text
    # The span shown is the replica's: it reaches from before the delete to after it.
    span = re.search(r'litestream-from">([^<]+)</span> to <span class="litestream-to">([^<]+)<', page.text)
    assert span, page.text
    start, end = (datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in span.groups())
    assert start <= before_delete <= end, (start, before_delete, end)

    r = await ds.client.post(
        "/-/litestream-restore",
        actor={"id": "root"},
        data={"database": "data", "timestamp": before_delete.isoformat()},
    )
    assert r.status_code == 302, r.text
    name = "data_at_" + before_delete.strftime("%Y%m%dT%H%M%SZ")
    assert r.headers["location"] == f"/{name}"
    assert name in ds.databases and not ds.databases[name].is_mutable
    rows = (await ds.client.get(f"/{name}/users.json?_shape=array", actor={"id": "root"})).json()
    assert [row["name"] for row in rows] == [f"user {i}" for i in range(5)] + ["precious"]
    # the live database is untouched, and the copy is not replicated
    assert sqlite3.connect(db).execute("select count(*) from users").fetchone()[0] == 0
    await asyncio.sleep(2.5)
    data = (await ds.client.get("/-/litestream-status.json", actor={"id": "root"})).json()
    assert [d["name"] for d in data["databases"]] == ["data"]
    assert {"name": name, "reason": "immutable database (opened with -i)"} in data["skipped"]


@pytest.mark.asyncio
async def test_restore_errors_are_shown(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    config = {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/r/$DB_NAME"]}}}
    ds = await make_ds([db], config=config)
    r = await ds.client.post(
        "/-/litestream-restore", actor={"id": "root"}, data={"database": "data", "timestamp": "2001-01-01T00:00:00Z"}
    )
    assert r.status_code == 400
    assert "walship restore failed" in r.text
    r = await ds.client.post("/-/litestream-restore", actor={"id": "root"}, data={"database": "data", "timestamp": "yesterday"})
    assert r.status_code == 400 and "is not a time like" in r.text


@pytest.mark.asyncio
async def test_restore_as_of_now_gives_the_latest_state(tmp_path, make_ds):
    """The form offers the current time first: past the newest backup, that is the latest state."""
    db = make_db(tmp_path / "data.db", rows=3)
    config = {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/r/$DB_NAME"]}}}
    ds = await make_ds([db], config=config)
    await wait_synced(ds)
    now = utcnow() + datetime.timedelta(seconds=5)
    r = await ds.client.post(
        "/-/litestream-restore", actor={"id": "root"}, data={"database": "data", "timestamp": now.isoformat()}
    )
    assert r.status_code == 302, r.text
    name = r.headers["location"].lstrip("/")
    rows = (await ds.client.get(f"/{name}/users.json?_shape=array", actor={"id": "root"})).json()
    assert [row["name"] for row in rows] == [f"user {i}" for i in range(3)]
