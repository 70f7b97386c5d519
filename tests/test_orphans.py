"""No walship outlives Datasette: not when Datasette is killed (SIGKILL: the kernel sends walship
SIGTERM), not when a program exits without running the shutdown hooks (atexit)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import VENV_BIN, free_port, make_db, pid_alive


def wait_gone(pid, timeout=15):
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"walship (pid {pid}) outlived Datasette"
        time.sleep(0.1)


def test_killed_datasette_takes_walship_with_it(tmp_path):
    db = make_db(tmp_path / "data.db")
    cfg = tmp_path / "datasette.json"
    cfg.write_text(json.dumps({
        "plugins": {"datasette-litestream": {"all-replicate": [f"file://{tmp_path}/r/$DB_NAME"]}},
        "permissions": {"litestream-view-status": True},
    }))  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(VENV_BIN, "datasette"), db, "-c", str(cfg), "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/litestream-status.json", timeout=1) as r:
                    pid = json.load(r)["pid"]
                if pid:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        assert pid_alive(pid)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    wait_gone(pid)


def test_exit_without_shutdown_hooks_stops_walship(tmp_path):
    db = make_db(tmp_path / "data.db")
    script = f"""
import asyncio
from datasette.app import Datasette
from datasette_litestream import supervisors

async def main():
    ds = Datasette([{db!r}], config={{"plugins": {{"datasette-litestream": {{"all-replicate": ["file://{tmp_path}/r/$DB_NAME"]}}}}}})
    await ds.invoke_startup()
    print(supervisors[ds].proc.pid, flush=True)

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[-1])
    assert not pid_alive(pid)  # atexit waited for it
    assert os.listdir(tmp_path / "r" / "data" / "ltx" / "0")
