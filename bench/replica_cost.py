"""What a replica costs: S3 requests, replica size and memory, walship against Litestream 0.5.17.

Everything runs in one run against moto's S3 server on 127.0.0.1:

(a) Requests. Each tool replicates its own small database through its own counting proxy
    (target/release/count-proxy, the testkit's proxy), both at once, with default settings. After
    the first writes have been compacted (a 30 s boundary has passed), count the requests made in
    30 s with the database idle, then in 30 s with one commit a second.
(b) Replica size after retention. A ~200 MB database (random-ish text rows) is replicated with
    short settings (snapshot every 30 s kept 60 s, l0-retention 10 s, levels 5 s and 15 s), under
    a write workload (batches of row updates) for a while, then left alone until retention has
    run; replica bytes (sum of the objects) / database bytes.
(c) Peak RSS (VmHWM, sampled from /proc) of each tool while it takes the first snapshot of that
    database to S3, and over the whole run of (b), which includes further snapshots.

The tools replicate one after the other in (b) and (c), so neither slows the other.

Usage: python bench/replica_cost.py [--db-mb 200] [--workload 60] [--settle 75]
"""

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import boto3

from servers import MOTO, MotoServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALSHIP = os.path.join(ROOT, "target", "release", "walship")
COUNT_PROXY = os.path.join(ROOT, "target", "release", "count-proxy")
BIN = os.path.dirname(sys.executable)
LITESTREAM = os.path.join(BIN, "litestream")
KEY, SECRET, REGION = "bench", "bench-secret", "us-east-1"
BUCKET = "bench"
TOOLS = ["walship", "litestream"]


def s3_client(port):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def objects(s3, prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        out.extend((o["Key"], o["Size"]) for o in page.get("Contents", []))
    return out


def config(path, db, url, extra=""):
    with open(path, "w") as f:
        f.write(f"{extra}dbs:\n  - path: {db}\n    replica:\n      url: {url}\n")


def start(tool, cfg, log):
    env = dict(os.environ)
    env.update(LITESTREAM_ACCESS_KEY_ID=KEY, LITESTREAM_SECRET_ACCESS_KEY=SECRET)
    if tool == "litestream":
        env.pop("AWS_CA_BUNDLE", None)  # 0.5.17 refuses to start an S3 replica with it set
    binary = LITESTREAM if tool == "litestream" else WALSHIP
    return subprocess.Popen([binary, "replicate", "-config", cfg], stdout=log, stderr=log, env=env)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def hwm_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return 0.0


class Proxy:
    """The testkit's counting proxy, run as a program."""

    def __init__(self, upstream_port):
        self.proc = subprocess.Popen([COUNT_PROXY, f"127.0.0.1:{upstream_port}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def reset(self):
        self.ask("reset")

    def dump(self):
        return json.loads(self.ask("dump"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def kind(method, path):
    path, _, query = path.partition("?")
    if method == "GET" and ("list-type" in query or path.rstrip("/") == "/" + BUCKET):
        return "LIST"
    return method


def summary(requests):
    counts = {}
    for method, path in requests:
        k = kind(method, path)
        counts[k] = counts.get(k, 0) + 1
    return counts


def fmt_counts(counts):
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def sleep_until(t):
    time.sleep(max(0.0, t - time.time()))


def requests_bench(s3_port, workdir):
    """(a): both tools at once, each through its own proxy, default settings."""
    procs, proxies, conns, logs = {}, {}, {}, {}
    for tool in TOOLS:
        db = os.path.join(workdir, f"a-{tool}.db")
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        conns[tool] = conn
        proxies[tool] = Proxy(s3_port)
        url = (f"s3://{BUCKET}/a-{tool}?endpoint=http://127.0.0.1:{proxies[tool].port}"
               f"&forcePathStyle=true&region={REGION}")
        cfg = os.path.join(workdir, f"a-{tool}.yml")
        config(cfg, db, url)
        logs[tool] = open(os.path.join(workdir, f"a-{tool}.log"), "w")
        procs[tool] = start(tool, cfg, logs[tool])
    for i in range(5):
        for conn in conns.values():
            conn.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}",))
    # Let the next 30 s boundary (default L1) compact what the first writes left.
    sleep_until((time.time() // 30 + 1) * 30 + 5)
    results = {}
    for p in proxies.values():
        p.reset()
    time.sleep(30)
    for tool, p in proxies.items():
        results[(tool, "idle")] = summary(p.dump())
        p.reset()
    start_t = time.time()
    for i in range(30):
        sleep_until(start_t + i + 0.5)
        for conn in conns.values():
            conn.execute("INSERT INTO t(v) VALUES (?)", (f"commit {i}",))
    sleep_until(start_t + 30)
    for tool, p in proxies.items():
        results[(tool, "busy")] = summary(p.dump())
    for tool in TOOLS:
        stop(procs[tool])
        proxies[tool].close()
        conns[tool].close()
        logs[tool].close()
    return results


def build_db(path, mb):
    """A WAL database of about `mb` MB: rows of random words (compressible, like real text)."""
    rng = random.Random(42)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(5000)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, n INTEGER, body TEXT)")
    target = mb * 1024 * 1024
    next_id = 1
    while os.path.getsize(path) + os.path.getsize(path + "-wal") < target:
        rows = []
        for _ in range(2000):
            words = rng.choices(vocab, k=rng.randint(40, 260))
            rows.append((next_id, " ".join(words[:5]), rng.randint(0, 1 << 40), " ".join(words)))
            next_id += 1
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return vocab, next_id - 1


def db_bytes(path):
    conn = sqlite3.connect(path)
    n, size = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return n * size


def workload(path, vocab, rows, seconds, seed):
    """Batches of 50 row updates (new text) 10 times a second, plus a few inserts."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    end, n = time.time() + seconds, 0
    while time.time() < end:
        conn.execute("BEGIN")
        for _ in range(50):
            body = " ".join(rng.choices(vocab, k=rng.randint(40, 260)))
            conn.execute("UPDATE docs SET body = ?, n = n + 1 WHERE id = ?", (body, rng.randint(1, rows)))
        conn.execute("INSERT INTO docs(title, n, body) VALUES ('new', 0, ?)",
                     (" ".join(rng.choices(vocab, k=100)),))
        conn.execute("COMMIT")
        n += 1
        time.sleep(0.1)
    conn.close()
    return n


def size_bench(tool, base, vocab, rows, s3, s3_port, workdir, args):
    """(b) and (c) for one tool."""
    d = os.path.join(workdir, f"b-{tool}")
    os.makedirs(d)
    db = os.path.join(d, "big.db")
    shutil.copyfile(base, db)
    prefix = f"b-{tool}"
    url = f"s3://{BUCKET}/{prefix}?endpoint=http://127.0.0.1:{s3_port}&forcePathStyle=true&region={REGION}"
    cfg = os.path.join(d, "config.yml")
    config(cfg, db, url,
           "snapshot:\n  interval: 30s\n  retention: 60s\nl0-retention: 10s\n"
           "levels:\n  - interval: 5s\n  - interval: 15s\n")
    size = db_bytes(db)
    with open(os.path.join(d, "replicate.log"), "w") as log:
        t0 = time.time()
        proc = start(tool, cfg, log)
        peak, stop_sampling = [0.0], threading.Event()

        def sample():
            while not stop_sampling.is_set():
                peak[0] = max(peak[0], hwm_mb(proc.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        # The first upload is the whole database: wait until an object of that scale exists.
        deadline = time.time() + 600
        while not any(s > size / 20 for _, s in objects(s3, prefix)):
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"{tool} never uploaded its first snapshot; see {log.name}")
            time.sleep(0.5)
        first_sync_s, first_sync_rss = time.time() - t0, max(peak[0], hwm_mb(proc.pid))
        txs = workload(db, vocab, rows, args.workload, seed=7)
        time.sleep(args.settle)
        peak[0] = max(peak[0], hwm_mb(proc.pid))
        stop_sampling.set()
        sampler.join()
        stop(proc)
    objs = objects(s3, prefix)
    replica = sum(s for _, s in objs)
    levels = {}
    for key, s in objs:
        level = "L" + str(int(key.split("/")[-2], 16))
        count, total = levels.get(level, (0, 0))
        levels[level] = (count + 1, total + s)
    db_size = db_bytes(db)
    shutil.rmtree(d)
    return dict(db=db_size, start_db=size, replica=replica, files=len(objs), levels=levels, txs=txs,
                first_sync_s=first_sync_s, first_sync_rss=first_sync_rss, rss=peak[0])


def ratio(a, b):
    return f"{a / b:.2f}" if b else ("1.00" if a == 0 else "inf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-mb", type=int, default=200)
    ap.add_argument("--workload", type=int, default=60, help="seconds of writes in (b)")
    ap.add_argument("--settle", type=int, default=75, help="seconds left for retention in (b)")
    ap.add_argument("--skip-requests", action="store_true")
    args = ap.parse_args()
    for binary in (WALSHIP, COUNT_PROXY, LITESTREAM, MOTO):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run `make bench`, which builds and installs it")
    workdir = tempfile.mkdtemp(prefix="replica-cost-")
    moto = MotoServer(workdir)
    s3_port = moto.port
    try:
        s3 = s3_client(s3_port)
        s3.create_bucket(Bucket=BUCKET)
        req = {}
        if not args.skip_requests:
            print("(a) requests: both tools at once, default settings, 30 s idle then 30 s at 1 commit/s",
                  flush=True)
            req = requests_bench(s3_port, workdir)
            for (tool, phase), counts in sorted(req.items()):
                print(f"    {tool:<10} {phase:<5} {sum(counts.values()):>4} requests: {fmt_counts(counts)}",
                      flush=True)
        print(f"(b, c) building a {args.db_mb} MB database", flush=True)
        base = os.path.join(workdir, "base.db")
        vocab, rows = build_db(base, args.db_mb)
        print(f"    {db_bytes(base) / 1e6:.0f} MB, {rows} rows", flush=True)
        big = {}
        for tool in TOOLS:
            print(f"(b, c) {tool}: first snapshot, {args.workload} s of writes, {args.settle} s for retention",
                  flush=True)
            r = size_bench(tool, base, vocab, rows, s3, s3_port, workdir, args)
            big[tool] = r
            print(f"    first snapshot uploaded after {r['first_sync_s']:.1f} s, peak RSS {r['first_sync_rss']:.0f} MB;"
                  f" {r['txs']} write transactions; db {r['db'] / 1e6:.1f} MB; run peak RSS {r['rss']:.0f} MB;"
                  f" replica {r['replica'] / 1e6:.1f} MB in {r['files']} files: "
                  + ", ".join(f"{lv} {c} ({b / 1e6:.1f} MB)" for lv, (c, b) in sorted(r["levels"].items())),
                  flush=True)
    finally:
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'':<44}{'walship':>10}{'Litestream':>12}{'ratio':>8}")
    rows_out = []
    if req:
        for phase, label in (("idle", "S3 requests, 30 s idle"), ("busy", "S3 requests, 30 s at 1 commit/s")):
            w, l = (sum(req[(t, phase)].values()) for t in TOOLS)
            rows_out.append((label, w, l, f"{w}", f"{l}"))
    w, l = (big[t]["replica"] / big[t]["db"] for t in TOOLS)
    rows_out.append(("replica size / db size after retention", w, l, f"{w:.2f}", f"{l:.2f}"))
    w, l = (big[t]["first_sync_rss"] for t in TOOLS)
    rows_out.append((f"peak RSS MB, first snapshot of {args.db_mb} MB", w, l, f"{w:.0f}", f"{l:.0f}"))
    w, l = (big[t]["rss"] for t in TOOLS)
    rows_out.append(("peak RSS MB, whole run (snapshots, writes)", w, l, f"{w:.0f}", f"{l:.0f}"))
    for label, w, l, ws, ls in rows_out:
        print(f"{label:<44}{ws:>10}{ls:>12}{ratio(w, l):>8}")
    print("(ratio = walship / Litestream; lower is better)")


if __name__ == "__main__":
    main()
