"""Writes crates/walship/walship.order: the functions walship runs, for the linker to lay out first.

The kernel maps a binary's code around each page that runs, 64 KB windows (fault-around) or a
whole large folio of the page cache at once, so the ~2 MB of code a replicator runs, spread over
walship's ~12 MB of text, kept 6-7 MB of it resident. Laid out together (lld's
--symbol-ordering-file, passed by crates/walship/build.rs), it maps ~1.5-2 MB and the rest of the
binary is never touched (`make bench`'s writer_speed: peak RSS 12.6 MB -> 7.3 MB).

The profile is callgrind's list of the functions walship executes, in three runs, the most common
use first so its code is densest: `walship replicate DB file://REPLICA` while an application
writes (a burst at full speed, then paced commits, checkpoints, a VACUUM); a config file with a
file and an S3 replica (moto's server), fast levels, snapshots, retention and the HTTP endpoints
polled as the plugin does; then restores from both replicas. Symbol names change with
dependencies: rerun `make orderfile` after updating Cargo.lock, or when `make bench` says the
order file is stale. A function the file names but the binary lacks is skipped, never an error.

Usage: python bench/orderfile.py  (after `cargo build --release -p walship`; `make orderfile`
installs valgrind, builds, profiles and relinks)
"""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from servers import MotoServer, free_port, function_symbols, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALSHIP = os.path.join(ROOT, "target", "release", "walship")
ORDER = os.path.join(ROOT, "crates", "walship", "walship.order")
KEY, SECRET, REGION, BUCKET = "order", "order-secret", "us-east-1", "order"


def wait_for(check, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def callgrind(out, args, env):
    """Starts walship under callgrind, keeping mangled names (the linker matches those)."""
    cmd = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}", WALSHIP]
    log = open(out + ".log", "w")
    return subprocess.Popen(cmd + args, env=env, stdout=log, stderr=log)


def write(db, seconds, status_port=None):
    """Mostly one-row commits, some large ones, checkpoints and a VACUUM; polls the HTTP endpoints."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous=FULL")
    # First a burst at full speed, as `make bench` writes: walship then meets SQLite's busy
    # handler and larger batches, whose code a paced writer never reaches.
    for _ in range(5000):
        conn.execute("INSERT INTO t(v) VALUES (?)", ("x" * 100,))
    end, i = time.time() + seconds, 0
    while time.time() < end:
        conn.execute("BEGIN")
        rows = 2000 if i % 500 == 0 else 1
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(os.urandom(60).hex(),)] * rows)
        conn.execute("COMMIT")
        if i % 1000 == 999:
            conn.execute("DELETE FROM t WHERE id % 3 = 0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if i == 2500:
            conn.execute("VACUUM")
        if status_port and i % 100 == 0:
            for path in ("/status", "/metrics", "/healthz"):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{status_port}{path}", timeout=30).read()
                except urllib.error.HTTPError:
                    pass  # /healthz is 503 until every replica has caught up
        i += 1
        time.sleep(0.005)
    conn.close()


def new_db(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.close()


def replicate(out, args, env, db, seconds, ready, status_port=None):
    """Profiles `walship replicate ARGS` once `ready()` returns, while the workload writes, then a
    graceful stop."""
    proc = callgrind(out, ["replicate", *args], env)
    ready()
    write(db, seconds, status_port)
    time.sleep(10)
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=300):
        sys.exit(f"walship replicate failed under callgrind (exit {proc.returncode}): see {out}.log")


def executed(path):
    """Function names in a callgrind output, in the order it first met them."""
    names = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"c?fn=\((\d+)\) (.+)$", line.rstrip("\n"))
            if m:
                names.setdefault(m.group(1), m.group(2))
    return list(names.values())


def profile(work, s3):
    """The callgrind outputs, most common use first: a file replica from the command line; a
    config file with file and S3 replicas, fast levels, snapshots, retention and the HTTP
    endpoints; restores from both."""
    env = dict(os.environ, LITESTREAM_ACCESS_KEY_ID=KEY, LITESTREAM_SECRET_ACCESS_KEY=SECRET)
    outs = []

    db, replica = os.path.join(work, "simple.db"), os.path.join(work, "simple-replica")
    new_db(db)
    outs.append(os.path.join(work, "replicate-args.cg"))
    replicate(outs[-1], [db, f"file://{replica}"], env, db, 30,
              lambda: wait_for(lambda: os.path.isdir(os.path.join(replica, "ltx")), "the first snapshot"))

    db, replica = os.path.join(work, "app.db"), os.path.join(work, "replica")
    new_db(db)
    status_port = free_port()
    s3_url = f"s3://{BUCKET}/app?endpoint={s3.endpoint}&region={REGION}&forcePathStyle=true"
    config = os.path.join(work, "walship.yml")
    with open(config, "w") as f:
        f.write(f"addr: 127.0.0.1:{status_port}\n"
                "levels:\n  - interval: 3s\n  - interval: 10s\n"
                "snapshot:\n  interval: 15s\n  retention: 20s\n"
                "l0-retention: 5s\nl0-retention-check-interval: 2s\n"
                f"dbs:\n  - path: {db}\n    replicas:\n"
                f"      - url: file://{replica}\n      - url: {s3_url}\n")
    outs.append(os.path.join(work, "replicate-config.cg"))
    replicate(outs[-1], ["-config", config], env, db, 45,
              lambda: wait_port(status_port, "walship's status server", timeout=120), status_port)

    for i, url in enumerate([f"file://{replica}", s3_url]):
        outs.append(os.path.join(work, f"restore{i}.cg"))
        target = os.path.join(work, f"restored{i}.db")
        if callgrind(outs[-1], ["restore", "-o", target, url], env).wait(timeout=300):
            sys.exit(f"walship restore {url} failed under callgrind: see {outs[-1]}.log")
    return outs


def main():
    for tool in ("valgrind", "nm"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            sys.exit(f"{tool} is missing: run `make orderfile`, which installs it")
    if not os.path.exists(WALSHIP):
        sys.exit(f"{WALSHIP} is missing: run `make orderfile`, which builds it")
    work = tempfile.mkdtemp(prefix="orderfile-")
    moto = MotoServer(work)
    try:
        urllib.request.urlopen(urllib.request.Request(f"{moto.endpoint}/{BUCKET}", method="PUT"))
        profiles = profile(work, moto)
    finally:
        moto.stop()

    defined, seen, order = function_symbols(WALSHIP), set(), []
    for path in profiles:
        for name in executed(path):
            if name in defined and name not in seen:
                seen.add(name)
                order.append(name)
    with open(ORDER, "w") as f:
        f.write("# Written by `make orderfile` (bench/orderfile.py): the functions walship runs,\n"
                "# which crates/walship/build.rs has the linker lay out first. Do not edit by hand.\n")
        f.write("\n".join(order) + "\n")
    shutil.rmtree(work)
    print(f"{ORDER}: {len(order)} functions")


if __name__ == "__main__":
    main()
