"""Writer speed, WAL size, lag and cost: the application alone, under walship, under Litestream.

One workload, run alternately in one process so that machine noise hits every candidate alike:
a writer commits N single-row transactions at synchronous=FULL (SQLite's default auto-checkpoint)
on a fresh database, first alone, then with `walship replicate` running, then with
`litestream replicate` (0.5.17) running, each replicating to a local file replica. Prints each
round and, per candidate: the median ratio of the writer's speed to its speed alone, the largest
WAL seen, the replication lag (a commit's time to the moment the L0 file holding it appears in the
replica: the first file whose capture timestamp is at or after the commit), p50 and p99, and the
replicator's CPU time and peak RSS.

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

from servers import function_symbols

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


def run_writer(path, n, commits):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous=FULL")
    payload = "x" * 100
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t(v) VALUES (?)", (payload,))
        conn.execute("COMMIT")
        commits.append(time.time())
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def watch_replica(replica, stop, seen):
    """Records when each L0 file appears in the replica, with its capture timestamp."""
    level0 = os.path.join(replica, "ltx", "0")
    while not stop.is_set():
        now = time.time()
        try:
            names = os.listdir(level0)
        except OSError:
            names = []
        for name in names:
            if name.endswith(".ltx") and name not in seen:
                try:
                    with open(os.path.join(level0, name), "rb") as f:
                        header = f.read(40)
                    captured = int.from_bytes(header[32:40], "big") / 1000
                    seen[name] = (captured, now)
                except OSError:
                    pass
        time.sleep(0.005)


def lags(commits, seen):
    """Each commit's lag: until the first file captured at or after it appeared."""
    files = sorted(seen.values())
    out, j = [], 0
    for t in commits:
        while j < len(files) and files[j][0] < t:
            j += 1
        if j < len(files):
            out.append(files[j][1] - t)
    return out


def usage(pid):
    """CPU seconds and peak RSS (MB) of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return cpu, hwm / 1024


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
    replica = os.path.join(run_dir, "replica")
    make_db(db)
    commits, seen, cost = [], {}, (0.0, 0.0)
    with open(os.path.join(run_dir, "replicator.log"), "w") as log:
        proc = replicator(kind, db, replica, log)
        stop, peak = threading.Event(), [0]
        watchers = [
            threading.Thread(target=watch_wal, args=(db, stop, peak)),
            threading.Thread(target=watch_replica, args=(replica, stop, seen)),
        ]
        for w in watchers:
            w.start()
        try:
            speed = run_writer(db, n, commits)
            if proc:
                time.sleep(3)  # let the last commits reach the replica before measuring lag
                cost = usage(proc.pid)
        finally:
            stop.set()
            for w in watchers:
                w.join()
            if proc:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    shutil.rmtree(run_dir)
    return speed, peak[0], lags(commits, seen), cost


def pct(values, p):
    """The p-th percentile (nearest rank), or NaN with no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


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
            speed, wal, lag, (cpu, rss) = one_run(kind, args.transactions, workdir)
            results[kind].append((speed, wal, lag, cpu, rss))
            extra = ""
            if kind != "alone":
                extra = f"   lag p50 {pct(lag, 50):.3f}s p99 {pct(lag, 99):.3f}s   cpu {cpu:.2f}s   rss {rss:.1f} MB"
            print(f"round {r + 1} {kind:<10} {speed:8.0f} tx/s   peak WAL {wal / 1e6:6.1f} MB{extra}", flush=True)
    shutil.rmtree(workdir)
    print()
    print(f"{'':<12}{'tx/s':>7}{'of alone':>10}{'WAL MB':>8}{'lag p50':>9}{'lag p99':>9}{'CPU s':>7}{'RSS MB':>8}")
    for kind in kinds:
        rows = results[kind]
        ratios = [row[0] / alone[0] for row, alone in zip(rows, results["alone"])]
        speed = statistics.median(row[0] for row in rows)
        wal = max(row[1] for row in rows) / 1e6
        line = f"{kind:<12}{speed:>7.0f}{statistics.median(ratios):>10.2f}{wal:>8.1f}"
        if kind != "alone":
            all_lags = [x for row in rows for x in row[2]]
            cpu = statistics.median(row[3] for row in rows)
            rss = max(row[4] for row in rows)
            line += f"{pct(all_lags, 50):>9.3f}{pct(all_lags, 99):>9.3f}{cpu:>7.2f}{rss:>8.1f}"
        print(line)
    peak = {k: max(row[4] for row in results[k]) for k in ("walship", "litestream")}
    print(f"\npeak RSS walship / litestream: {peak['walship'] / peak['litestream']:.2f}")
    print(order_coverage())


def order_coverage():
    """How much of walship.order the binary still has: the layout that keeps its code compact."""
    order = os.path.join(ROOT, "crates", "walship", "walship.order")
    try:
        with open(order) as f:
            wanted = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        defined = function_symbols(WALSHIP)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"walship.order coverage unknown: {e}"
    if not defined:
        return "walship.order coverage unknown: the binary is stripped (a wheel build's)"
    found = sum(name in defined for name in wanted)
    hint = "" if found >= 0.9 * len(wanted) else " (stale: run `make orderfile`)"
    return f"walship.order: {found} of {len(wanted)} functions found in the binary{hint}"


if __name__ == "__main__":
    main()
