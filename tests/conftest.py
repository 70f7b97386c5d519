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
