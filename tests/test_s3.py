"""Writes through Datasette's JSON write API reach an S3 replica (moto), and both walship restore
and Litestream 0.5.17's restore bring them back."""

import os
import sqlite3
import subprocess

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, VENV_BIN, make_db, supervisor, utcnow, wait_synced


@pytest.mark.asyncio
async def test_write_api_changes_reach_s3_and_restore(tmp_path, make_ds, s3, bucket):
    endpoint, _ = s3
    db = make_db(tmp_path / "data.db")
    url = f"s3://{bucket}/data?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"
    config = {
        "plugins": {"datasette-litestream": {"access-key-id": ACCESS_KEY, "secret-access-key": SECRET_KEY}},
        "databases": {"data": {"plugins": {"datasette-litestream": {"replicas": [url]}}}},
    }
    ds = await make_ds([db], config=config)
    token = await ds.create_token("root")
    headers = {"Authorization": f"Bearer {token}"}
    r = await ds.client.post(
        "/data/users/-/insert", json={"rows": [{"id": 10, "name": "ten"}, {"id": 11, "name": "eleven"}]}, headers=headers
    )
    assert r.status_code == 201, r.text
    r = await ds.client.post("/data/users/10/-/update", json={"update": {"name": "TEN"}}, headers=headers)
    assert r.status_code == 200, r.text
    r = await ds.client.post("/data/users/1/-/delete", headers=headers)
    assert r.status_code == 200, r.text
    want = sqlite3.connect(db).execute("select id, name from users order by id").fetchall()
    assert (10, "TEN") in want and (1, "user 1") not in want
    data = await wait_synced(ds, after=utcnow())
    assert data["databases"][0]["replicas"][0]["type"] == "s3"
    assert data["databases"][0]["replicas"][0]["state"] == "healthy"

    env = {**os.environ, "LITESTREAM_ACCESS_KEY_ID": ACCESS_KEY, "LITESTREAM_SECRET_ACCESS_KEY": SECRET_KEY}
    walship = supervisor(ds).settings.walship
    subprocess.run([walship, "restore", "-o", str(tmp_path / "w.db"), url], env=env, check=True)
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start with it set
    litestream = os.path.join(VENV_BIN, "litestream")
    subprocess.run([litestream, "restore", "-o", str(tmp_path / "l.db"), url], env=env, check=True)
    for restored in ("w.db", "l.db"):
        conn = sqlite3.connect(tmp_path / restored)
        assert conn.execute("select id, name from users order by id").fetchall() == want, restored
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"


@pytest.mark.asyncio
async def test_a_failing_replica_shows_on_the_dashboard_while_the_other_stays_healthy(tmp_path, make_ds, s3, bucket):
    from conftest import wait_for

    endpoint, _ = s3
    db = make_db(tmp_path / "data.db")
    missing = f"s3://no-such-bucket/data?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"
    config = {
        "plugins": {"datasette-litestream": {"access-key-id": ACCESS_KEY, "secret-access-key": SECRET_KEY}},
        "databases": {"data": {"plugins": {"datasette-litestream": {"replicas": [missing, f"file://{tmp_path}/ok"]}}}},
    }
    ds = await make_ds([db], config=config)

    async def states():
        r = await ds.client.get("/-/litestream-status.json", actor={"id": "root"})
        reps = {x["name"]: x for x in r.json()["databases"][0]["replicas"]}
        return reps if reps["s3"]["state"] == "failing" and reps["file"]["state"] == "healthy" else None

    reps = await wait_for(states, timeout=30, what="the S3 replica to fail")
    assert reps["s3"]["last_error"] and reps["s3"]["failing_since"]
    page = await ds.client.get("/-/litestream-status", actor={"id": "root"})
    assert "litestream-state-failing" in page.text and "no-such-bucket" in page.text
