"""The demo until the Datasette plugin exists: walship replicating a live database.

Builds a demo database, runs `walship replicate` on it with a local file replica while an
application writes to it, stops walship (SIGTERM: final sync), restores the replica with the real
`litestream restore` 0.5.17, and checks that the restored database equals the source.
"""

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, ".demo")
VENV_BIN = os.path.dirname(sys.executable)
WALSHIP = os.path.join(ROOT, "target", "release", "walship")


def build_database(path):
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        PRAGMA journal_mode=wal;
        CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, joined TEXT);
        CREATE INDEX users_email ON users(email);
        """
    )
    conn.executemany(
        "INSERT INTO users(name, email, joined) VALUES (?, ?, date('2024-01-01', ?))",
        [(f"user {i}", f"user{i}@example.com", f"+{i % 700} days") for i in range(20000)],
    )
    conn.commit()
    return conn


def checkpointed_digest(path):
    """The database as a reader sees it: copy it with its WAL and fold the WAL in."""
    copy = path + ".copy"
    for suffix in ("", "-wal"):
        if os.path.exists(path + suffix):
            shutil.copy(path + suffix, copy + suffix)
    conn = sqlite3.connect(copy)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    digest = hashlib.sha256(open(copy, "rb").read()).hexdigest()
    os.remove(copy)
    return digest


def main():
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(DEMO)
    db = os.path.join(DEMO, "demo.db")
    replica = os.path.join(DEMO, "replica")
    restored = os.path.join(DEMO, "restored.db")
    app = build_database(db)
    print(f"built {db}: 20000 users")

    walship = subprocess.Popen([WALSHIP, "replicate", db, f"file://{replica}"])
    print(f"walship replicate {db} file://{replica}  (pid {walship.pid})")
    for batch in range(5):
        time.sleep(1)
        app.executemany(
            "INSERT INTO users(name, email, joined) VALUES (?, ?, date('now'))",
            [(f"new user {batch}-{i}", f"new{batch}-{i}@example.com") for i in range(200)],
        )
        app.execute("DELETE FROM users WHERE id % 97 = ?", (batch,))
        app.commit()
        print(f"  batch {batch + 1}: +200 users, some deleted")
    time.sleep(1.5)
    walship.send_signal(signal.SIGTERM)
    print(f"walship stopped with status {walship.wait()}")
    files = sorted(os.listdir(os.path.join(replica, "ltx", "0")))
    print(f"replica holds {len(files)} L0 files: {files[0]} .. {files[-1]}")

    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start with it set
    litestream = os.path.join(VENV_BIN, "litestream")
    subprocess.run([litestream, "restore", "-o", restored, f"file://{replica}"], check=True, env=env)

    want = checkpointed_digest(db)
    got = hashlib.sha256(open(restored, "rb").read()).hexdigest()
    rows = sqlite3.connect(restored).execute("SELECT count(*) FROM users").fetchone()[0]
    source_rows = app.execute("SELECT count(*) FROM users").fetchone()[0]
    check = sqlite3.connect(restored).execute("PRAGMA integrity_check").fetchone()[0]
    print(f"litestream restore -> {restored}: {rows} users (source {source_rows}), integrity_check {check}")
    print(f"sha256 source   {want}")
    print(f"sha256 restored {got}")
    same = want == got
    print("EQUAL: the restored database is byte-for-byte the source" if same else "DIFFERENT")
    return 0 if same and check == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
