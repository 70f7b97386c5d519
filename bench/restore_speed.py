"""Restore speed and memory: walship against Litestream 0.5.17 restoring the same replica.

One run builds one replica and restores it with both tools in alternating rounds, so that machine
noise hits both alike:

1. A database of about --size-mb MB (1000-byte random blobs, 4 to a page: incompressible, the
   worst case for a restore) is replicated by one `walship replicate` process to a local file
   replica, compaction levels off (`levels: []`), monitor interval 10 ms. Its snapshot interval
   is chosen so that the first snapshot (level 9) comes right after the first capture and the
   next one only after the run.
2. Once the snapshot exists, --l0-files small write transactions (4 random rows rewritten) are
   committed one at a time, each waiting for its own L0 file, so the replica ends as one snapshot
   plus that many L0 files (and the first capture, an L0 file that the restore does not read):
   what a restore some hours after a snapshot reads. `walship ltx -json` reports the composition
   and `walship restore -dry-run -json` the plan.
3. Each round restores the latest state with `walship restore` and `litestream restore`, and
   copies the source database to the output with `dd conv=fsync` (the plain fsynced copy: the
   least any restore writes), in alternating order, both restores with the same
   -integrity-check (none by default: Litestream's default; walship's own default is quick), and
   records the wall time, user+system CPU time and peak RSS (VmHWM, sampled from /proc every
   5 ms). The summary gives walship's median time as a ratio to Litestream's and to the copy's.
4. Every restored file is checked: its SHA-256 must be the same in every round and for both
   tools, and the first restore by each tool must pass PRAGMA integrity_check and hold exactly the
   source database's rows (a hash over schema and rows in id order).

The work directory is under target/bench/ and is removed at the end (unless --keep).

With --s3, the replica's files are copied as they are into moto's S3 server (bench/replica,
the S3 key layout) and both tools restore from there: moto, a Python server on the same two cores,
then weighs on both tools' times.

Usage: python bench/restore_speed.py [--size-mb 1000] [--l0-files 3000] [--rounds 3] [--quick]
                                     [--s3] [--keep]
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from servers import MOTO, MotoServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALSHIP = os.path.join(ROOT, "target", "release", "walship")
LITESTREAM = os.path.join(os.path.dirname(sys.executable), "litestream")
BENCH_DIR = os.path.join(ROOT, "target", "bench")
TOOLS = {"walship": WALSHIP, "litestream": LITESTREAM}
BLOB = 1000  # bytes per row: 4 rows to a 4096-byte page
ROWS_PER_TX = 4  # rows each small write transaction rewrites
KEY, SECRET, REGION, BUCKET = "bench", "bench-secret", "us-east-1", "bench"
RETENTION = "8760h"  # nothing is removed during a run


def start_replicate(cfg, log):
    return subprocess.Popen([WALSHIP, "replicate", "-config", cfg], stdout=log, stderr=log)


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build_db(path, mb):
    """A database of about `mb` MB of random blobs, in WAL mode; returns its row count."""
    rows = mb * 1024 * 1024 // (BLOB + 24)
    conn = sqlite3.connect(path, isolation_level=None)
    # Built without a journal, then switched to WAL: the replica starts from the finished file.
    conn.execute("PRAGMA journal_mode=off")
    conn.execute("PRAGMA synchronous=off")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    step = 50_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
            "INSERT INTO t(data) SELECT randomblob(?) FROM c", (n, BLOB))
        conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=wal")
    conn.close()
    return rows


def write_config(path, db, replica, snapshot_interval):
    with open(path, "w") as f:
        f.write(f"levels: []\n"
                f"snapshot:\n  interval: {snapshot_interval}\n  retention: {RETENTION}\n"
                f"dbs:\n  - path: {db}\n    monitor-interval: 10ms\n"
                f"    replica:\n      url: file://{replica}\n      sync-interval: 100ms\n")


def snapshot_interval(lead, least):
    """An interval of at least `least` seconds whose next wall-clock multiple (when walship
    snapshots) is `lead` to `lead` + 20 seconds away: one snapshot soon, the next one far."""
    now = time.time()
    for interval in range(int(least), int(least) + 7200):
        wait = interval - now % interval
        if lead <= wait <= lead + 20:
            return interval, now + wait
    sys.exit("no snapshot interval fits")  # 7200 candidates: not reached in practice


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode not in (0, -signal.SIGTERM):
        sys.exit(f"walship replicate exited with {proc.returncode}")


def ltx_names(directory):
    try:
        return [n for n in os.listdir(directory) if n.endswith(".ltx")]
    except FileNotFoundError:
        return []


def wait_for(what, check, proc, log_path, timeout):
    deadline = time.time() + timeout
    while not check():
        if proc.poll() is not None:
            sys.exit(f"walship replicate exited while waiting for {what}; see {log_path}")
        if time.time() > deadline:
            sys.exit(f"no {what} after {timeout} s; see {log_path}")
        time.sleep(0.002)


def build_replica(workdir, size_mb, l0_files):
    """Steps 1 and 2; returns the source database and the replica directory.

    One `walship replicate` process does it all: a restart would capture the whole database
    again (its first capture was not from the WAL, so there is no WAL position to resume), and
    the restore would then read it as well. So the snapshot interval is picked so that its first
    wall-clock multiple falls just after the first capture and its second after the writes.
    """
    db = os.path.join(workdir, "source.db")
    replica = os.path.join(workdir, "replica")
    store = os.path.join(workdir, ".source.db-litestream", "ltx")
    cfg = os.path.join(workdir, "walship.yml")
    log_path = os.path.join(workdir, "replicate.log")
    t0 = time.time()
    rows = build_db(db, size_mb)
    print(f"    database: {os.path.getsize(db) / 1e6:.0f} MB, {rows} rows, built in "
          f"{time.time() - t0:.0f} s", flush=True)
    # Generous on a loaded machine: the first capture reads and writes the whole database.
    lead = 15 + size_mb * 0.05
    interval, snapshot_at = snapshot_interval(lead, 180 + lead * 2 + l0_files * 0.15)
    write_config(cfg, db, replica, f"{interval}s")
    with open(log_path, "a") as log:
        t0 = time.time()
        proc = start_replicate(cfg, log)
        try:
            # The writes wait for the first capture: a commit racing it can be lost (its WAL
            # position is recorded without the WAL header's checksum, so later frames never
            # validate).
            wait_for("first capture before the snapshot time",
                     lambda: ltx_names(os.path.join(store, "0")), proc, log_path,
                     snapshot_at - time.time())
            wait_for("snapshot", lambda: ltx_names(os.path.join(store, "9")), proc, log_path,
                     snapshot_at + 600 - time.time())
            print(f"    first capture and snapshot ({interval} s interval) in "
                  f"{time.time() - t0:.0f} s", flush=True)
            t0 = time.time()
            level0 = os.path.join(store, "0")
            rng = random.Random(5)
            conn = sqlite3.connect(db, isolation_level=None, timeout=30)
            for _ in range(l0_files):
                before = len(ltx_names(level0))
                conn.execute("BEGIN")
                for _ in range(ROWS_PER_TX):
                    conn.execute("UPDATE t SET data = randomblob(?) WHERE id = ?",
                                 (BLOB, rng.randint(1, rows)))
                conn.execute("COMMIT")
                # One capture per commit: the next commit waits for this one's L0 file.
                wait_for("L0 file", lambda: len(ltx_names(level0)) > before, proc, log_path, 60)
            conn.close()
            local = {lv: set(ltx_names(os.path.join(store, lv))) for lv in ("0", "9")}
            wait_for("upload of every file",
                     lambda: all(set(ltx_names(os.path.join(replica, "ltx", lv))) >= names
                                 for lv, names in local.items()),
                     proc, log_path, 600)
        finally:
            stop(proc)
    print(f"    {l0_files} write transactions replicated in {time.time() - t0:.0f} s", flush=True)
    return db, replica


def tool_env():
    env = dict(os.environ)
    env.update(LITESTREAM_ACCESS_KEY_ID=KEY, LITESTREAM_SECRET_ACCESS_KEY=SECRET)
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5.17 refuses an S3 replica with it set
    return env


def composition(url):
    out = subprocess.run([WALSHIP, "ltx", "-json", url], capture_output=True, text=True,
                         check=True, env=tool_env()).stdout
    levels = {}
    for f in json.loads(out)["files"]:
        count, size = levels.get(f["level"], (0, 0))
        levels[f["level"]] = (count + 1, size + f["size"])
    return levels


def restore_plan(url, out):
    """The files walship's restore reads, by level: (count, bytes)."""
    out = subprocess.run([WALSHIP, "restore", "-dry-run", "-json", "-o", out, url],
                         capture_output=True, text=True, env=tool_env())
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        return None
    levels = {}
    for f in files:
        count, size = levels.get(f["level"], (0, 0))
        levels[f["level"]] = (count + 1, size + f.get("size", 0))
    return levels


class Moto(MotoServer):
    """moto's S3 server on 127.0.0.1, holding a copy of the file replica."""

    def __init__(self, workdir):
        import boto3  # only --s3 needs it

        super().__init__(workdir)
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                               aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        self.s3.create_bucket(Bucket=BUCKET)

    def copy_replica(self, replica):
        """Uploads every LTX file under the S3 layout (level as 4 hex digits); returns its URL."""
        t0 = time.time()
        root = os.path.join(replica, "ltx")
        for level in sorted(os.listdir(root)):
            for name in sorted(ltx_names(os.path.join(root, level))):
                self.s3.upload_file(os.path.join(root, level, name), BUCKET,
                                    f"replica/{int(level):04x}/{name}")
        print(f"    copied to moto's S3 in {time.time() - t0:.0f} s", flush=True)
        return (f"s3://{BUCKET}/replica?endpoint=http://127.0.0.1:{self.port}"
                f"&forcePathStyle=true&region={REGION}")


def fmt_levels(levels):
    return ", ".join(f"L{lv} {c} files {b / 1e6:.1f} MB" for lv, (c, b) in sorted(levels.items()))


def remove_db(path):
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def hwm_mb(pid):
    """The process's peak RSS so far (VmHWM), or 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return 0.0


def restore(cmd, out, workdir):
    """Runs one restore (or the plain copy); returns wall seconds, CPU seconds and peak RSS in MB.

    The peak RSS is the child's VmHWM, sampled every 5 ms until it exits: its ru_maxrss would
    count this Python process's pages too (Linux keeps the high-water mark of the forked image
    across exec).
    """
    remove_db(out)
    tool = os.path.basename(cmd[0])
    with open(os.path.join(workdir, "restore.log"), "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=tool_env())
        peak, done = [0.0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], hwm_mb(proc.pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        # wait4 for the CPU time of this child alone.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{tool} restore exited with {proc.returncode}; see {log.name}")
    return wall, usage.ru_utime + usage.ru_stime, peak[0]


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def content_hash(path):
    """Schema and every row in id order; `immutable` so that reading changes nothing."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    h = hashlib.sha256()
    for (sql,) in conn.execute("SELECT sql FROM sqlite_schema ORDER BY name"):
        h.update(sql.encode())
    n = 0
    for rowid, data in conn.execute("SELECT id, data FROM t ORDER BY id"):
        h.update(rowid.to_bytes(8, "big"))
        h.update(data)
        n += 1
    conn.close()
    return h.hexdigest(), n


def integrity(path):
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    conn.close()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--l0-files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--integrity-check", choices=["none", "quick", "full"], default="none",
                    help="passed to both tools' restore")
    ap.add_argument("--quick", action="store_true", help="100 MB, 300 L0 files, 2 rounds")
    ap.add_argument("--s3", action="store_true",
                    help="restore from moto's S3 server (the same objects, copied there) instead")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.l0_files, args.rounds = 100, 300, 2
    for binary in list(TOOLS.values()) + ([MOTO] if args.s3 else []):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run `make bench`, which builds and installs it")
    os.makedirs(BENCH_DIR, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="restore-speed-", dir=BENCH_DIR)
    moto = None
    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    print(f"building a {args.size_mb} MB replica with {args.l0_files} L0 files in {workdir}",
          flush=True)
    try:
        db, replica = build_replica(workdir, args.size_mb, args.l0_files)
        url = "file://" + replica
        if args.s3:
            moto = Moto(workdir)
            url = moto.copy_replica(replica)
        levels = composition(url)
        if levels.get(9, (0, 0))[0] != 1:
            sys.exit(f"the replica holds {levels.get(9, (0, 0))[0]} snapshots, not 1: the writes "
                     "outlasted the snapshot interval on a busy machine; run again")
        total = sum(b for _, b in levels.values())
        print(f"    replica: {sum(c for c, _ in levels.values())} files, {total / 1e6:.1f} MB: "
              f"{fmt_levels(levels)}", flush=True)
        plan = restore_plan(url, os.path.join(workdir, "plan.db"))
        if plan:
            print(f"    restore plan: {fmt_levels(plan)}", flush=True)
        source_hash, source_rows = content_hash(db)
        db_mb = os.path.getsize(db) / 1e6

        # The floor a restore is measured against: the database itself copied to the output and
        # fsynced (dd conv=fsync), the least a restore of it writes.
        commands = {
            tool: lambda out, binary=binary: [binary, "restore", "-integrity-check",
                                              args.integrity_check, "-o", out, url]
            for tool, binary in TOOLS.items()
        }
        commands["plain copy"] = lambda out: ["dd", f"if={db}", f"of={out}", "bs=1M",
                                              "conv=fsync", "status=none"]
        results = {tool: [] for tool in commands}
        digests = {}
        print(f"{args.rounds} rounds from {url.split('?')[0]}, -integrity-check "
              f"{args.integrity_check} for both", flush=True)
        for r in range(args.rounds):
            order = list(commands) if r % 2 == 0 else list(reversed(commands))
            for tool in order:
                out = os.path.join(workdir, f"restored-{tool.replace(' ', '-')}.db")
                wall, cpu, rss = restore(commands[tool](out), out, workdir)
                results[tool].append((wall, cpu, rss))
                if tool == "plain copy":
                    print(f"round {r + 1} {tool:<10} {wall:7.2f} s   cpu {cpu:6.2f} s   "
                          f"peak RSS {rss:6.1f} MB", flush=True)
                    remove_db(out)
                    continue
                digest = file_sha256(out)
                note = ""
                if tool not in digests:
                    check = integrity(out)
                    got, n = content_hash(out)
                    if check != ["ok"]:
                        sys.exit(f"{tool}'s restore fails integrity_check: {check[:5]}")
                    if (got, n) != (source_hash, source_rows):
                        sys.exit(f"{tool}'s restore differs from the source: {n} rows of "
                                 f"{source_rows}, content hash {got[:12]} != {source_hash[:12]}")
                    digests[tool] = digest
                    note = "   integrity ok, rows = source"
                elif digest != digests[tool]:
                    sys.exit(f"{tool}'s restore in round {r + 1} differs from its first")
                print(f"round {r + 1} {tool:<10} {wall:7.2f} s   cpu {cpu:6.2f} s   "
                      f"peak RSS {rss:6.1f} MB   sha256 {digest[:12]}{note}", flush=True)
                remove_db(out)
        same = digests["walship"] == digests["litestream"]
        load_after = uptime()
    finally:
        if moto:
            moto.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"database {db_mb:.0f} MB; replica {total / 1e6:.0f} MB: {fmt_levels(levels)}; restored "
          f"from {'moto S3' if args.s3 else 'a file replica'}, -integrity-check {args.integrity_check}")
    print(f"{'':<12}{'median s':>10}{'min s':>8}{'max s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
    med = {}
    for tool, runs in results.items():
        walls = [run[0] for run in runs]
        med[tool] = statistics.median(walls)
        print(f"{tool:<12}{med[tool]:>10.2f}{min(walls):>8.2f}{max(walls):>8.2f}"
              f"{statistics.median(run[1] for run in runs):>8.2f}{max(run[2] for run in runs):>13.1f}")
    print(f"ratio walship / Litestream (median wall time): {med['walship'] / med['litestream']:.2f}")
    print(f"ratio walship / plain copy (median wall time): {med['walship'] / med['plain copy']:.2f}"
          f"   (Litestream / plain copy: {med['litestream'] / med['plain copy']:.2f})")
    print("restored files: " + ("byte-identical across tools and rounds" if same else
                                "each tool's rounds identical; the tools' files differ in bytes, "
                                "both equal to the source row for row"))
    print(f"load before: {load_before}")
    print(f"load after:  {load_after}")


if __name__ == "__main__":
    main()
