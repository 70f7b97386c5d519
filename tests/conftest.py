"""Fixtures: sample databases, a real S3 server (moto), and Datasette instances with the plugin.

The plugin and walship under test are the installed ones (`make py-test` installs the wheel).
"""

import asyncio
import datetime
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
import pytest_asyncio
from datasette.app import Datasette

VENV_BIN = os.path.dirname(sys.executable)
ACCESS_KEY, SECRET_KEY = "testkey", "testsecret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_db(path, rows=3):
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
    )
    conn.executemany("INSERT INTO users(name) VALUES (?)", [(f"user {i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return str(path)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


async def wait_for(predicate, timeout=20.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def status_json(ds):
    response = await ds.client.get("/-/litestream-status.json", actor={"id": "root"})
    assert response.status_code == 200, response.text
    return response.json()


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def parse_time(text):
    # RFC 3339 with nanoseconds -> aware datetime (microseconds)
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.datetime.fromisoformat(text)


async def wait_synced(ds, name=None, timeout=20.0, after=None):
    """Until walship has captured every write made before `after` (default: now) and every
    replica of every (or one) database holds the database's current TXID. (last_sync is the
    time of walship's last capture, so `after` must be just after a write.)"""

    async def synced():
        data = await status_json(ds)
        dbs = [d for d in data["databases"] if name is None or d["name"] == name]
        ok = dbs and all(
            d["txid"] is not None
            and d["last_sync"] is not None
            and (after is None or parse_time(d["last_sync"]) > after)
            and all(r["position"] == d["txid"] for r in d["replicas"])
            for d in dbs
        )
        return data if ok else None

    return await wait_for(synced, timeout=timeout, what="replicas to catch up")


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on a free loopback port; yields (endpoint, boto3 client)."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    yield endpoint, client
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def bucket(s3, request):
    endpoint, client = s3
    name = "b-" + request.node.name.lower().replace("_", "-")[:50]
    client.create_bucket(Bucket=name)
    return name


@pytest_asyncio.fixture
async def make_ds():
    """make_ds(files, config=..., **kwargs) -> a started Datasette; shut down at the end."""
    made = []

    async def make(files, config=None, start=True, **kwargs):
        ds = Datasette([str(f) for f in files], config=config or {}, **kwargs)
        ds.root_enabled = True
        made.append(ds)
        if start:
            await ds.invoke_startup()
        return ds

    yield make
    for ds in made:
        await ds.invoke_shutdown()


def supervisor(ds):
    from datasette_litestream import supervisors

    return supervisors.get(ds)


def start_moto(env=None):
    """moto_server on a free loopback port, started and answering; returns (process, endpoint)."""
    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            # moto's own API: not an S3 action, so it does not use up the unauthenticated ones
            urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=1)
            return proc, endpoint
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)


def stop_process(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def s3_auth():
    """moto's S3 server checking credentials the way AWS does (signature, key, IAM policy), with
    one bucket and an IAM user allowed s3:* on it. Yields (endpoint, bucket, access key id,
    secret key).

    moto authenticates nothing until INITIAL_NO_AUTH_ACTION_COUNT actions have run; the setup
    runs within that allowance, then /moto-api/reset-auth sets it to 0: from there on every
    request must be signed with a known key and its secret."""
    import json

    import boto3

    proc, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "100"})
    try:
        setup = {"endpoint_url": endpoint, "aws_access_key_id": "setup", "aws_secret_access_key": "setup",
                 "region_name": "us-east-1"}  # fmt: skip
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="walship")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="walship", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="walship")["AccessKey"]
        bucket = "checked-bucket"
        boto3.client("s3", **setup).create_bucket(Bucket=bucket)
        request = urllib.request.Request(
            endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
        yield endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        stop_process(proc)
