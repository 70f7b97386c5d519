"""The demo until `walship replicate` and the plugin exist.

Builds a demo database, writes it as a snapshot LTX (our encoder) into a local file replica,
restores that replica with the real `litestream restore` (0.5.17), and checks both are equal.
"""

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, ".demo")
VENV_BIN = os.path.dirname(sys.executable)


def build_database(path):
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, joined TEXT);
        CREATE INDEX users_email ON users(email);
        """
    )
    conn.executemany(
        "INSERT INTO users(name, email, joined) VALUES (?, ?, date('2024-01-01', ?))",
        [(f"user {i}", f"user{i}@example.com", f"+{i % 700} days") for i in range(20000)],
    )
    conn.commit()
    conn.close()


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(DEMO)
    db = os.path.join(DEMO, "demo.db")
    replica = os.path.join(DEMO, "replica")
    restored = os.path.join(DEMO, "restored.db")
    build_database(db)
    print(f"built {db} ({os.path.getsize(db)} bytes)")

    snapshot = os.path.join(ROOT, "target", "release", "examples", "snapshot")
    subprocess.run([snapshot, db, replica, "2a"], check=True)

    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses to start with it set
    litestream = os.path.join(VENV_BIN, "litestream")
    subprocess.run([litestream, "restore", "-o", restored, f"file://{replica}"], check=True, env=env)

    same = digest(db) == digest(restored)
    rows = sqlite3.connect(restored).execute("SELECT count(*) FROM users").fetchone()[0]
    check = sqlite3.connect(restored).execute("PRAGMA integrity_check").fetchone()[0]
    print(f"litestream restore -> {restored}: {rows} users, integrity_check {check}")
    print(f"sha256 source   {digest(db)}")
    print(f"sha256 restored {digest(restored)}")
    print("EQUAL: the restored database is byte-for-byte the source" if same else "DIFFERENT")
    return 0 if same and check == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
