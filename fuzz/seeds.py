#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: small valid inputs for each target.

WAL seeds are real SQLite WALs (Python's sqlite3); LTX seeds are files that walship's replicate
wrote through the ltx encoder (pass the walship binary as the first argument; without it the
LTX seeds already checked in are kept). Config and URL seeds are the forms the tests use.
Run from anywhere: python3 fuzz/seeds.py [path/to/walship]
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def make_db(path, rows, page_size=512):
    """A WAL-mode database whose WAL SQLite never checkpoints, and the open connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(rows):
        conn.execute("INSERT INTO t(v) VALUES (?)", (f"row-{i}-" + "x" * (i * 37 % 200),))
    return conn


def wal_seeds(tmp):
    for rows, name in [(2, "sqlite-3tx.wal"), (6, "sqlite-7tx.wal")]:
        db = os.path.join(tmp, f"{name}.db")
        conn = make_db(db, rows)
        with open(db + "-wal", "rb") as f:
            wal = f.read()
        conn.close()
        # Mode byte 0: the rest is a WAL file as it is.
        put("wal", name, b"\x00" + wal)


def ltx_seeds(tmp, walship):
    db = os.path.join(tmp, "app.db")
    conn = make_db(db, 3)
    conn.close()  # checkpoints: the replica starts from a full snapshot
    conn = sqlite3.connect(db, isolation_level=None)
    replica = os.path.join(tmp, "replica")
    proc = subprocess.Popen(
        [walship, "replicate", "-exec", "sleep 3", db, "file://" + replica],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import time

    time.sleep(1.5)
    conn.execute("INSERT INTO t(v) VALUES ('after the snapshot')")
    conn.close()
    proc.wait(timeout=60)
    files = []
    for root, _, names in os.walk(replica):
        files += [os.path.join(root, n) for n in names if n.endswith(".ltx")]
    if not files:
        sys.exit("walship wrote no LTX files")
    for path in sorted(files):
        rel = os.path.relpath(path, replica).replace(os.sep, "_")
        with open(path, "rb") as f:
            put("ltx_decode", rel, f.read())


CONFIGS = {
    "minimal.yml": "dbs:\n  - path: app.db\n    replica:\n      url: s3://b/app\n",
    "full.yml": """addr: "127.0.0.1:9090"
exec: "python app.py"
levels:
  - interval: 10s
  - interval: 1m
snapshot:
  interval: 12h
  retention: 72h
l0-retention: 10m
l0-retention-check-interval: 30s
retention:
  enabled: false
shutdown-sync-timeout: 1m30s
shutdown-sync-interval: 250ms
logging:
  level: debug
  type: json
  stderr: true
  source: yes
sync-interval: 5s
region: eu-west-1
access-key-id: AKIDTOP
secret-access-key: TOPSECRET
max-sync-ltx-files: 100
auto-recover: true
dbs:
  - path: /data/app.db
    meta-path: /var/lib/walship/app
    monitor-interval: 500ms
    checkpoint-interval: 2m
    busy-timeout: 3s
    min-checkpoint-page-count: 2000
    truncate-page-n: 200000
    max-sync-wal-bytes: 32MiB
    restore-if-db-not-exists: true
    snapshot:
      interval: 1h
    replica:
      type: s3
      name: primary
      bucket: my-bucket
      path: backups/app
      endpoint: minio.internal:9000
      force-path-style: false
      sign-payload: false
      require-content-md5: false
      skip-verify: true
      storage-class: STANDARD_IA
      part-size: 10MiB
      concurrency: 4
      sse-kms-key-id: alias/backups
      sync-interval: 2s
  - dir: /data/tenants
    pattern: "*.db"
    recursive: true
    watch: true
    meta-dir: /var/lib/walship/tenants
    replicas:
      - path: /backups/tenants
      - url: gs://gbucket/tenants
      - url: abs://acct@container/tenants
        account-key: AZKEY
        sas-token: SAS
        endpoint: https://acct.blob.core.windows.net
      - type: s3
        bucket: other
        path: tenants
        sse-customer-key-path: /etc/walship/sse.key
""",
    "replicas.yml": """dbs:
  - path: /data/app.db
    replicas:
      - url: s3://one/app?region=us-west-2&forcePathStyle=true
      - url: s3://two/app
      - name: s3-2
        url: file:///backups/app
      - url: /mnt/backup/app
      - url: gs://g/app
""",
    "anchors.yml": """dbs:
  - path: /a.db
    replica: &shared
      type: s3
      bucket: b
      path: a
  - path: /b.db
    replica:
      <<: *shared
      path: b
""",
    "env.yml": """addr: ${ADDR}
exec: echo $$ $NOPE
dbs:
  - path: $DATA/app.db
    replica:
      url: s3://${BUCKET}/$DOLLAR
  - path: ~/b.db
    replica:
      type: abs
      bucket: c
      account-name: acct
""",
}

URLS = {
    "s3.txt": "s3://bucket/db?endpoint=http%3A%2F%2Flocalhost%3A9000&region=us-east-1&partSize=5242880",
    "s3-aws-host.txt": "s3://bucket.s3.us-west-2.amazonaws.com/team/db",
    "s3-minio-host.txt": "s3://bucket.minio.local:9000/db",
    "s3-arn.txt": "s3://arn:aws:s3:us-east-1:123456789012:accesspoint/ap/prefix/db?sseKmsKeyId=k",
    "gs.txt": "gs://bucket/path/to/db",
    "abs.txt": "abs://account@container/path",
    "file.txt": "file:///var/backups/db",
    "path.txt": "/var/backups/db",
    "lines.txt": "sqlite:///data/app.db\ns3://b/app\ngs://g/app",
}


def main():
    for name, text in CONFIGS.items():
        put("config", name, text)
    for name, text in URLS.items():
        put("replica_url", name, text)
    with tempfile.TemporaryDirectory() as tmp:
        wal_seeds(tmp)
        if len(sys.argv) > 1:
            shutil.rmtree(os.path.join(CORPUS, "ltx_decode"), ignore_errors=True)
            ltx_seeds(tmp, os.path.abspath(sys.argv[1]))


if __name__ == "__main__":
    main()
