"""Faults the plugin must survive without losing data (issue 7, scenario 8): wrong credentials
against an S3 server that checks them, walship killed again and again under a writer, and
Datasette killed while walship uploads."""

import asyncio
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request

import boto3
import botocore.exceptions
import pytest
from conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    VENV_BIN,
    free_port,
    make_db,
    pid_alive,
    status_json,
    supervisor,
    wait_for,
    wait_synced,
)


def s3_url(endpoint, bucket, path="data"):
    return f"s3://{bucket}/{path}?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"


def s3_config(url, file_dir, key_id, secret):
    return {
        "plugins": {"datasette-litestream": {"access-key-id": key_id, "secret-access-key": secret}},
        "databases": {"data": {"plugins": {"datasette-litestream": {"replicas": [url, f"file://{file_dir}"]}}}},
    }


def restore(walship, url, out, env=None):
    result = subprocess.run(
        [walship, "restore", "-o", str(out), url], env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(out)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    return conn


async def restored_as(walship, url, out, want, env=None, timeout=30):
    """Restores until the copy holds `want` (the replica is eventually current), then returns it.

    walship's status cannot tell whether its last capture holds a given write (its last_sync is
    when a capture ended, and one that began just before the write's commit can end after it),
    so the proof is the restored copy."""
    deadline = time.monotonic() + timeout

    def attempt(n):
        conn = restore(walship, url, f"{out}.{n}", env)
        try:
            return rows(conn)
        finally:
            conn.close()

    for n in itertools.count():
        got = await asyncio.to_thread(attempt, n)
        if got == want or time.monotonic() > deadline:
            assert got == want, f"the replica did not reach the final state in {timeout}s"
            return got
        await asyncio.sleep(0.5)


def seeded_rng():
    """Random moments, from a seed printed for a failing run to be repeated (FAULTS_SEED=...)."""
    seed = int(os.environ.get("FAULTS_SEED") or time.time_ns() % 2**32)
    print(f"FAULTS_SEED={seed}")
    return random.Random(seed)


def rows(conn, table="users"):
    return conn.execute(f"select * from {table} order by id").fetchall()


async def insert(ds, headers, new):
    r = await ds.client.post("/data/users/-/insert", json={"rows": new}, headers=headers)
    assert r.status_code == 201, r.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "wrong, code",
    [("secret", "SignatureDoesNotMatch"), ("key", "InvalidAccessKeyId")],
)
async def test_wrong_credentials_show_on_the_dashboard_then_right_ones_replicate(
    tmp_path, make_ds, s3_auth, wrong, code
):
    endpoint, bucket, key_id, secret = s3_auth
    bad_key, bad_secret = (key_id, "wrong-secret") if wrong == "secret" else ("AKIANOSUCHKEY0000000", secret)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=bad_key, aws_secret_access_key=bad_secret,
                          region_name="us-east-1")  # fmt: skip
    with pytest.raises(botocore.exceptions.ClientError, match=code):
        client.list_objects_v2(Bucket=bucket)  # the server does check them

    db = make_db(tmp_path / "data.db")
    url = s3_url(endpoint, bucket, f"data-{wrong}")
    ds = await make_ds([db], config=s3_config(url, tmp_path / "file", bad_key, bad_secret))
    sup = supervisor(ds)
    pid = sup.proc.pid
    headers = {"Authorization": f"Bearer {await ds.create_token('root')}"}
    await insert(ds, headers, [{"id": 100, "name": "while the credentials are wrong"}])

    async def s3_failing_file_current():
        data = await status_json(ds)
        [db_status] = data["databases"]
        reps = {r["name"]: r for r in db_status["replicas"]}
        ok = (
            reps["s3"]["state"] == "failing"
            and reps["file"]["state"] == "healthy"
            and reps["file"]["position"] == db_status["txid"]
            and db_status["txid"] is not None
            and db_status["txid"] >= 2
        )
        return reps if ok else None

    reps = await wait_for(s3_failing_file_current, timeout=30, what="S3 failing, the file replica current")
    error = reps["s3"]["last_error"]
    # the cause and the fix, in the user's words: which replica, what S3 said, which keys to check
    assert 'replica "s3"' in error and code in error, error
    assert "check access-key-id/secret-access-key" in error, error
    assert reps["s3"]["failing_since"] and reps["s3"]["position"] is None
    assert reps["file"]["last_error"] is None
    page = await ds.client.get("/-/litestream-status", actor={"id": "root"})
    assert page.status_code == 200
    assert "litestream-state-failing" in page.text and "litestream-state-healthy" in page.text
    assert code in page.text and "check access-key-id/secret-access-key" in page.text
    # no crash: the same walship, never restarted, and Datasette serves
    data = await status_json(ds)
    assert data["running"] and data["pid"] == pid and data["restarts"] == 0 and data["last_exit"] is None
    assert (await ds.client.get("/data/users/100.json")).status_code == 200
    # the secret shows nowhere
    assert bad_secret not in page.text and bad_secret not in str(data)

    # The plugin reads static credentials at startup: fixing them means restarting Datasette.
    await ds.invoke_shutdown()
    ds = await make_ds([db], config=s3_config(url, tmp_path / "file", key_id, secret))
    headers = {"Authorization": f"Bearer {await ds.create_token('root')}"}
    await insert(ds, headers, [{"id": 101, "name": "with the right credentials"}])
    data = await wait_synced(ds, timeout=30)
    reps = {r["name"]: r for r in data["databases"][0]["replicas"]}
    assert reps["s3"]["state"] == "healthy" and reps["s3"]["last_error"] is None, reps["s3"]
    want = rows(sqlite3.connect(db))
    assert [r[0] for r in want][-2:] == [100, 101]
    creds = {"LITESTREAM_ACCESS_KEY_ID": key_id, "LITESTREAM_SECRET_ACCESS_KEY": secret}
    await restored_as(supervisor(ds).settings.walship, url, tmp_path / "restored.db", want, creds)


@pytest.mark.asyncio
async def test_an_unreachable_replica_at_first_start_shows_as_starting(tmp_path, make_ds):
    # With an empty local store walship asks the replicas where TXIDs stand before the first
    # capture, and waits up to a minute for one that does not answer; the dashboard says so.
    db = make_db(tmp_path / "data.db")
    url = s3_url(f"http://127.0.0.1:{free_port()}", "nobody-listens")
    ds = await make_ds([db], config=s3_config(url, tmp_path / "file", "AKIAEXAMPLE", "secret"))

    async def starting():
        data = await status_json(ds)
        states = [r["state"] for r in data["databases"][0]["replicas"]]
        return data if data["running"] and data["error"] is None and states == ["starting"] * 2 else None

    await wait_for(starting, timeout=15, what="both replicas shown as starting")
    page = await ds.client.get("/-/litestream-status", actor={"id": "root"})
    assert page.status_code == 200 and "litestream-state-starting" in page.text
    assert (await ds.client.get("/data/users.json")).status_code == 200


@pytest.mark.asyncio
async def test_fixing_a_credentials_file_recovers_without_restarting_datasette(tmp_path, make_ds, s3_auth):
    endpoint, bucket, key_id, secret = s3_auth
    db = make_db(tmp_path / "data.db")
    url = s3_url(endpoint, bucket, "data-file")
    creds_file = tmp_path / "creds.json"
    creds_file.write_text(json.dumps({"access-key-id": key_id, "secret-access-key": "wrong-secret"}))
    config = {
        "plugins": {"datasette-litestream": {"credentials-file": str(creds_file), "credentials-refresh-interval": 1}},
        "databases": {"data": {"plugins": {"datasette-litestream": {"replicas": [url]}}}},
    }
    ds = await make_ds([db], config=config)

    async def s3_state(state):
        data = await status_json(ds)
        [replica] = data["databases"][0]["replicas"]
        return data if replica["state"] == state else None

    data = await wait_for(lambda: s3_state("failing"), timeout=30, what="the S3 replica to fail")
    assert "SignatureDoesNotMatch" in data["databases"][0]["replicas"][0]["last_error"]
    first = data["pid"]
    creds_file.write_text(json.dumps({"access-key-id": key_id, "secret-access-key": secret}))
    await wait_for(lambda: supervisor(ds).alive() and supervisor(ds).proc.pid != first, timeout=15,
                   what="walship restarted with the new credentials")  # fmt: skip
    headers = {"Authorization": f"Bearer {await ds.create_token('root')}"}
    await insert(ds, headers, [{"id": 100, "name": "after the fix"}])
    data = await wait_synced(ds, timeout=30)
    assert data["databases"][0]["replicas"][0]["state"] == "healthy"
    creds = {"LITESTREAM_ACCESS_KEY_ID": key_id, "LITESTREAM_SECRET_ACCESS_KEY": secret}
    want = rows(sqlite3.connect(db))
    await restored_as(supervisor(ds).settings.walship, url, tmp_path / "restored.db", want, creds)


@pytest.mark.asyncio
async def test_walship_killed_again_and_again_under_a_writer_loses_nothing(tmp_path, make_ds):
    rng = seeded_rng()
    db = make_db(tmp_path / "data.db")
    replica = tmp_path / "replica"
    config = {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{replica}/$DB_NAME"]}}}
    ds = await make_ds([db], config=config)
    sup = supervisor(ds)
    headers = {"Authorization": f"Bearer {await ds.create_token('root')}"}
    committed = []
    stop = asyncio.Event()

    big = [False]

    async def writer():
        # Phases of small rows, after which a restarted walship can resume where its last capture
        # ended, alternate with rows of ~8 KiB: then the WAL outgrows SQLite's autocheckpoint
        # (4 MiB) while walship is down, Datasette's connection checkpoints behind its back, the
        # WAL restarts, and the new walship must capture the whole database.
        n = 1000
        while not stop.is_set():
            pad = "x" * (8000 if big[0] else 50)
            batch = [{"id": n + i, "name": f"row {n + i} {pad}"} for i in range(5)]
            await insert(ds, headers, batch)
            committed.extend(r["id"] for r in batch)
            n += len(batch)
            await asyncio.sleep(0.01)

    writing = asyncio.create_task(writer())
    kills = rng.randint(3, 5)
    killed = []
    try:
        for k in range(kills):
            big[0] = k % 2 == 1
            await wait_for(lambda: sup.alive() and sup.proc.pid not in killed, timeout=90, what="walship's restart")
            # anywhere from its first steps (before it serves /healthz) to well into replicating
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            assert not writing.done(), writing
            pid = sup.proc.pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        big[0] = False
        await wait_for(lambda: sup.alive() and sup.proc.pid not in killed, timeout=90, what="the last restart")
        await asyncio.sleep(1.0)  # and it replicates under the writer again
    finally:
        stop.set()
        await writing
    data = await status_json(ds)
    assert data["restarts"] == kills and data["last_exit"]["code"] == -signal.SIGKILL
    await insert(ds, headers, [{"id": 999, "name": "the last write"}])
    committed.append(999)
    await wait_synced(ds, timeout=60)

    want = rows(sqlite3.connect(db))
    assert sorted(r[0] for r in want) == sorted(set(committed) | {1, 2, 3}), "a write went missing in Datasette"
    # how each walship began: resuming the WAL where the last capture ended, or in full
    starts = [line.split("INFO ", 1)[-1][:100] for line in sup.logs if "whole database" in line or "resuming" in line]
    print(f"{kills} kills, {len(committed)} rows written, {os.path.getsize(db)} bytes", *starts, sep="\n")
    await restored_as(sup.settings.walship, f"file://{replica}/data", tmp_path / "restored.db", want)


class HoldingProxy:
    """A TCP proxy in front of S3 that holds the response to every PUT for `hold` seconds: an
    upload is then in flight for a known while, and `in_flight` tells when.

    HTTP/1.1 without pipelining: a chunk from the client while no request awaits its response
    starts a request; the first chunk back starts its response."""

    def __init__(self, upstream_port, hold=0.3):
        self.upstream_port, self.hold = upstream_port, hold
        self.in_flight = 0
        self.puts = 0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        assert started.wait(10)

    def _run(self, started):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _connection(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        waiting = []  # the method of the request awaiting its response

        async def requests():
            while chunk := await client_reader.read(65536):
                if not waiting:
                    waiting.append(chunk.split(b" ", 1)[0])
                    if waiting[0] == b"PUT":
                        self.puts += 1
                        self.in_flight += 1
                upstream_writer.write(chunk)
                await upstream_writer.drain()

        async def responses():
            while chunk := await upstream_reader.read(65536):
                if waiting and waiting.pop() == b"PUT":
                    try:
                        await asyncio.sleep(self.hold)
                    finally:
                        self.in_flight -= 1
                client_writer.write(chunk)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(requests()), asyncio.ensure_future(responses())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if waiting and waiting.pop() == b"PUT":
                self.in_flight -= 1
            client_writer.close()
            upstream_writer.close()


class Writer(threading.Thread):
    """Commits batches of rows straight to the SQLite file, recording each committed id."""

    def __init__(self, path, pad=2000):
        super().__init__(daemon=True)
        self.path, self.pad = path, pad
        self.committed = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = sqlite3.connect(self.path, timeout=30)
            n = 1000
            while not self.stop.is_set():
                ids = range(n, n + 5)
                with conn:
                    conn.executemany(
                        "insert into users(id, name) values (?, ?)", [(i, f"row {i} " + "x" * self.pad) for i in ids]
                    )
                self.committed.extend(ids)  # after the commit returned: durable in the WAL
                n += 5
                time.sleep(0.01)
            conn.close()
        except Exception as e:  # the test checks it
            self.error = e

    def finish(self):
        self.stop.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error


class Server:
    """Datasette as its own process, so that it can be SIGKILLed."""

    def __init__(self, db, config_path):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "datasette"), db, "-c", str(config_path), "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def status(self):
        url = f"http://127.0.0.1:{self.port}/-/litestream-status.json"
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)

    def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"Datasette exited with code {self.proc.returncode}"
            try:
                data = self.status()
                if predicate(data):
                    return data
            except OSError:
                pass
            assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
            time.sleep(0.2)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_gone(pid, timeout=10):
    """walship notices Datasette's death (PR_SET_PDEATHSIG), makes its final sync and exits."""
    start = time.monotonic()
    while pid_alive(pid):
        assert time.monotonic() - start < timeout, f"walship (pid {pid}) outlived Datasette by {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start


def uploading(data):
    [db] = data["databases"]
    return data["pid"] and db["replicas"][0]["bytes_uploaded"] and db["replicas"][0]["position"]


def caught_up(data):
    [db] = data["databases"]
    return db["txid"] is not None and all(r["position"] == db["txid"] and r["state"] == "healthy" for r in db["replicas"])


def test_datasette_killed_mid_upload_then_restarted_loses_nothing(tmp_path, s3, bucket):
    from datasette_litestream.config import find_walship

    rng = seeded_rng()
    endpoint, _ = s3
    proxy = HoldingProxy(int(endpoint.rsplit(":", 1)[1]))
    db = make_db(tmp_path / "data.db")
    url = s3_url(f"http://127.0.0.1:{proxy.port}", bucket)  # walship uploads through the proxy
    direct = s3_url(endpoint, bucket)  # the restores go straight to S3
    config = tmp_path / "datasette.json"
    config.write_text(json.dumps({
        "plugins": {"datasette-litestream": {"access-key-id": ACCESS_KEY, "secret-access-key": SECRET_KEY}},
        "databases": {"data": {"plugins": {"datasette-litestream": {"replicas": [url]}}}},
        "permissions": {"litestream-view-status": True},
    }))  # fmt: skip
    creds = {"LITESTREAM_ACCESS_KEY_ID": ACCESS_KEY, "LITESTREAM_SECRET_ACCESS_KEY": SECRET_KEY}
    server = Server(db, config)
    writer = Writer(db)
    pid = None
    try:
        # Three times over: the race that decides whether Datasette's threads close walship's
        # output pipe before or after the kernel sends walship SIGTERM goes either way.
        for round in range(3):
            server.wait(lambda d: d["pid"] and d["pid"] != pid, 30, "Datasette and a new walship")
            if round == 0:
                writer.start()
            server.wait(uploading, 30, "uploads")
            time.sleep(rng.uniform(0.0, 2.0))
            deadline = time.monotonic() + 10
            while not proxy.in_flight:  # the moment: an upload sent, its answer not yet back
                assert time.monotonic() < deadline, "no upload in flight"
                time.sleep(0.005)
            pid = server.status()["pid"]
            before_kill = len(writer.committed)
            server.kill()
            puts_at_kill = proxy.puts
            print(f"walship exited {wait_gone(pid):.2f}s after Datasette's SIGKILL, "
                  f"with {proxy.puts - puts_at_kill} more PUTs")  # fmt: skip
            committed_before_kill = writer.committed[:before_kill]
            # walship's last act (SIGTERM from the kernel) was a final sync: S3 already holds
            # every row committed before the kill, even if this Datasette never came back
            shipped = restore(find_walship(), direct, tmp_path / f"at-kill-{round}.db", creds)
            missing = set(committed_before_kill) - {r[0] for r in rows(shipped)}
            shipped.close()
            assert not missing, f"round {round}: {len(missing)} rows committed before the kill are not in S3"
            time.sleep(rng.uniform(0.5, 2.0))  # the writer goes on alone
            server = Server(db, config)

        server.wait(lambda d: d["pid"] and d["pid"] != pid, 30, "Datasette and a new walship")
        server.wait(uploading, 30, "uploads to resume")
        time.sleep(1.0)
        writer.finish()
        with sqlite3.connect(db) as conn:
            conn.execute("insert into users(id, name) values (999, 'the last write')")
        data = server.wait(caught_up, 60, "the replica to catch up")
        want = rows(sqlite3.connect(db))
        asyncio.run(restored_as(find_walship(), direct, tmp_path / "restored.db", want, creds))
        assert data["restarts"] == 0
        server.kill()
        wait_gone(data["pid"])
    finally:
        writer.stop.set()
        server.kill()
        proxy.close()

    # the restore above is the database's final state: every row, those committed before each
    # kill, while Datasette was down, and after
    assert {r[0] for r in want} == set(writer.committed) | {1, 2, 3, 999}
    print(f"{len(writer.committed)} rows written")
