"""Writer speed and WAL size: the application alone, under walship, and under Litestream 0.5.17.

One workload, run alternately in one process so that machine noise hits every candidate alike:
a writer commits N single-row transactions at synchronous=FULL (SQLite's default auto-checkpoint)
on a fresh database, first alone, then with `walship replicate` running, then with
`litestream replicate` running, each replicating to a local file replica. Prints each round and
the median ratio of each replicator's speed to the application's speed alone, and the largest WAL
seen during the run.

Usage: python bench/writer_speed.py [--transactions N] [--rounds R]
"""

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALSHIP = os.path.join(ROOT, "target", "release", "walship")
LITESTREAM = os.path.join(os.path.dirname(sys.executable), "litestream")


def make_db(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    conn.close()


def watch_wal(path, stop, peak):
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], os.path.getsize(path + "-wal"))
        except OSError:
            pass
        time.sleep(0.01)


def run_writer(path, n):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous=FULL")
    payload = "x" * 100
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t(v) VALUES (?)", (payload,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def replicator(kind, db, replica, log):
    if kind == "alone":
        return None
    env = dict(os.environ)
    if kind == "litestream":
        env.pop("AWS_CA_BUNDLE", None)
        cmd = [LITESTREAM, "replicate", db, "file://" + replica]
    else:
        cmd = [WALSHIP, "replicate", db, "file://" + replica]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    # Let it take its first snapshot and its read lock before the writer starts.
    deadline = time.time() + 30
    while time.time() < deadline and not os.path.isdir(os.path.join(replica, "ltx")):
        time.sleep(0.05)
    time.sleep(0.5)
    return proc


def one_run(kind, n, workdir):
    run_dir = tempfile.mkdtemp(dir=workdir)
    db = os.path.join(run_dir, "bench.db")
    make_db(db)
    with open(os.path.join(run_dir, "replicator.log"), "w") as log:
        proc = replicator(kind, db, os.path.join(run_dir, "replica"), log)
        stop, peak = threading.Event(), [0]
        watcher = threading.Thread(target=watch_wal, args=(db, stop, peak))
        watcher.start()
        try:
            speed = run_writer(db, n)
        finally:
            stop.set()
            watcher.join()
            if proc:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    shutil.rmtree(run_dir)
    return speed, peak[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for binary in (WALSHIP, LITESTREAM):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run `make bench`, which builds and installs it")
    kinds = ["alone", "walship", "litestream"]
    results = {k: [] for k in kinds}
    workdir = tempfile.mkdtemp()
    print(f"{args.transactions} single-row transactions at synchronous=FULL, {args.rounds} rounds")
    for r in range(args.rounds):
        for kind in kinds:
            speed, wal = one_run(kind, args.transactions, workdir)
            results[kind].append((speed, wal))
            print(f"round {r + 1} {kind:<10} {speed:8.0f} tx/s   peak WAL {wal / 1e6:6.1f} MB", flush=True)
    shutil.rmtree(workdir)
    print()
    print(f"{'':<12}{'tx/s (median)':>14}{'of alone':>10}{'peak WAL MB':>13}")
    for kind in kinds:
        ratios = [s / a for (s, _), (a, _) in zip(results[kind], results["alone"])]
        speed = statistics.median(s for s, _ in results[kind])
        wal = max(w for _, w in results[kind]) / 1e6
        print(f"{kind:<12}{speed:>14.0f}{statistics.median(ratios):>10.2f}{wal:>13.1f}")


if __name__ == "__main__":
    main()
