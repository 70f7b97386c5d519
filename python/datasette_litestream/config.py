"""Datasette's plugin config -> a walship config, validated, with errors that name the key and fix.

The keys are the earlier datasette-litestream plugin's (0.2a0): top-level `all-replicate`,
`metrics-addr` and credential keys; per-database `replicas` and monitor settings. Credentials go to
walship through its environment, never into the config file.
"""

import difflib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field

from datasette.utils import StartupError

PLUGIN = "datasette-litestream"

TOP_KEYS = {
    "all-replicate": "a list of replica URL templates for every database ($DB_NAME, $DB_DIRECTORY, $PWD)",
    "metrics-addr": "where walship serves /metrics, /status and /healthz, e.g. :9090 or 0.0.0.0:9090",
    "access-key-id": "S3 access key id (better: the LITESTREAM_ACCESS_KEY_ID environment variable)",
    "secret-access-key": "S3 secret key (better: LITESTREAM_SECRET_ACCESS_KEY)",
    "session-token": "S3 session token for temporary credentials",
    "credentials-file": "a JSON file with access-key-id, secret-access-key and optional session-token",
    "credentials-command": "a command printing that JSON",
    "credentials-refresh-interval": "seconds between re-reading credentials-file or credentials-command",
    "walship-path": "the walship binary to run instead of the bundled one",
    "log-level": "walship's log level: debug, info, warn or error",
}

# Per-database keys, as walship's `dbs:` entries take them (the path is Datasette's).
DB_KEYS = {
    "replicas",
    "replica",
    "monitor-interval",
    "checkpoint-interval",
    "busy-timeout",
    "min-checkpoint-page-count",
    "max-checkpoint-page-count",  # Litestream 0.3's name for truncate-page-n
    "truncate-page-n",
    "max-sync-wal-bytes",
    "snapshot",
    "meta-path",
}

# Replica keys, as walship's config takes them.
REPLICA_KEYS = {
    "type", "name", "path", "url", "retention", "retention-check-interval", "snapshot-interval",
    "sync-interval", "validation-interval", "max-sync-ltx-files", "auto-recover", "access-key-id",
    "secret-access-key", "region", "bucket", "endpoint", "force-path-style", "sign-payload",
    "require-content-md5", "skip-verify", "storage-class", "part-size", "concurrency",
    "sse-customer-algorithm", "sse-customer-key", "sse-customer-key-path", "sse-kms-key-id",
    "account-name", "account-key", "sas-token", "age",
}  # fmt: skip

SECRET_KEYS = {
    "secret-access-key", "session-token", "sse-customer-key", "account-key", "sas-token",
    "access-key-id",
}  # fmt: skip

SCHEMES = ("file", "s3", "gs", "abs")
LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass
class Settings:
    """What the plugin runs: walship's config and environment, and which databases it covers."""

    walship: str
    addr: str  # walship's `addr`: host:port
    status_host: str  # where the plugin reaches it
    port: int
    log_level: str = "info"
    databases: dict = field(default_factory=dict)  # Datasette name -> walship `dbs` entry
    skipped: dict = field(default_factory=dict)  # Datasette name -> why it is not replicated
    credentials: dict = field(default_factory=dict)
    top: dict = field(default_factory=dict)

    def walship_config(self):
        return {
            "addr": self.addr,
            "logging": {"level": self.log_level},
            "dbs": list(self.databases.values()),
        }

    def env(self):
        """The child's environment: ours plus the credentials."""
        env = dict(os.environ)
        creds = self.credentials
        if creds.get("access-key-id"):
            env["LITESTREAM_ACCESS_KEY_ID"] = creds["access-key-id"]
            env["AWS_ACCESS_KEY_ID"] = creds["access-key-id"]
        if creds.get("secret-access-key"):
            env["LITESTREAM_SECRET_ACCESS_KEY"] = creds["secret-access-key"]
            env["AWS_SECRET_ACCESS_KEY"] = creds["secret-access-key"]
        if creds.get("session-token"):
            env["AWS_SESSION_TOKEN"] = creds["session-token"]
        return env


def fail(where, message):
    raise StartupError(f"{PLUGIN}: {where}: {message}")


def check_keys(mapping, allowed, where):
    if not isinstance(mapping, dict):
        fail(where, f"expected a mapping of keys, got {json.dumps(mapping)}")
    for key in mapping:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f' Did you mean "{near[0]}"?' if near else ""
            fail(
                where,
                f'unknown key "{key}".{hint} Valid keys: {", ".join(sorted(allowed))}',
            )


def top_config(datasette):
    return datasette.plugin_config(PLUGIN) or None


def db_config(datasette, name):
    return datasette.plugin_config(PLUGIN, database=name, fallback=False)


def is_configured(datasette):
    """Whether the plugin has any config at all, top level or per database."""
    if top_config(datasette):
        return True
    return any(db_config(datasette, name) for name in (datasette.config or {}).get("databases") or {})


def build(datasette, port=None, previous=None):
    """Validates the plugin config and returns Settings, or raises StartupError."""
    top = top_config(datasette) or {}
    check_keys(top, TOP_KEYS, f"plugins.{PLUGIN}")
    templates = top.get("all-replicate") or []
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        fail(f"plugins.{PLUGIN}.all-replicate", 'expected a list of URLs, e.g. ["s3://bucket/$DB_NAME"]')
    addr, status_host, port = parse_addr(top.get("metrics-addr"), port)
    level = top.get("log-level", "info")
    if level not in LOG_LEVELS:
        fail(f"plugins.{PLUGIN}.log-level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    settings = Settings(
        walship=find_walship(top.get("walship-path")),
        addr=addr,
        status_host=status_host,
        port=port,
        log_level=level,
        top=top,
    )
    check_credentials(top)
    for name, db in datasette.databases.items():
        block = db_config(datasette, name)
        if block is None and not templates:
            continue
        where = f"databases.{name}.plugins.{PLUGIN}"
        if block is not None:
            check_keys(block, DB_KEYS, where)
        if db.is_memory or not db.path:
            settings.skipped[name] = "in-memory database"
            continue
        if not db.is_mutable:
            settings.skipped[name] = "immutable database (opened with -i)"
            continue
        settings.databases[name] = db_entry(name, db.path, block or {}, templates, where)
    return settings


def db_entry(name, path, block, templates, where):
    path = os.path.abspath(path)
    values = {
        "$DB_NAME": name,
        "$DB_DIRECTORY": os.path.dirname(os.path.realpath(path)),
        "$PWD": os.getcwd(),
    }
    entry = {"path": path}
    for key, value in block.items():
        if key in ("replicas", "replica"):
            continue
        entry["truncate-page-n" if key == "max-checkpoint-page-count" else key] = value
    given = block.get("replicas", [])
    if "replica" in block:
        given = [block["replica"]] + list(given if isinstance(given, list) else [])
    if not isinstance(given, list):
        fail(f"{where}.replicas", "expected a list, e.g. [{url: s3://bucket/db}]")
    replicas = []
    for i, replica in enumerate(given):
        replicas.append(replica_entry(replica, values, f"{where}.replicas[{i}]"))
    for i, template in enumerate(templates):
        replica = replica_entry(template, values, f"plugins.{PLUGIN}.all-replicate[{i}]")
        replica.setdefault("name", f"t{i}")
        replicas.append(replica)
    if not replicas:
        fail(where, "no replicas: add replicas: [{url: s3://bucket/" + name + "}]")
    name_replicas(replicas)
    entry["replicas"] = replicas
    return entry


def replica_entry(replica, values, where):
    if isinstance(replica, str):
        replica = {"url": replica}
    check_keys(replica, REPLICA_KEYS, where)
    replica = dict(replica)
    for key in ("url", "path"):
        if key in replica:
            if not isinstance(replica[key], str):
                fail(f"{where}.{key}", "expected a string")
            replica[key] = substitute(replica[key], values, f"{where}.{key}")
    if "url" in replica:
        check_url(replica["url"], f"{where}.url")
    elif "path" in replica:
        replica["path"] = os.path.abspath(replica["path"])
    elif replica.get("type") not in ("s3", "gs", "abs"):
        fail(where, "needs a url (s3://bucket/path, file:///dir, ...) or a path (a directory)")
    if "type" in replica and replica["type"] not in SCHEMES:
        fail(f"{where}.type", f"{replica['type']!r} is not one of {', '.join(SCHEMES)}")
    return replica


def substitute(text, values, where):
    if "$DB" in text.replace("$DB_NAME", "").replace("$DB_DIRECTORY", ""):
        fail(where, f"{text!r}: $DB is no longer supported; use $DB_NAME (or $DB_DIRECTORY)")
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def check_url(url, where):
    if "://" not in url:
        if not url:
            fail(where, "is empty: give a replica URL such as s3://bucket/path")
        return  # a directory path, as Litestream accepts
    scheme, rest = url.split("://", 1)
    if scheme not in SCHEMES:
        near = difflib.get_close_matches(scheme, SCHEMES, n=1, cutoff=0.5)
        hint = f' (did you mean "{near[0]}://"?)' if near else ""
        fail(where, f"{url!r} has an unsupported scheme {scheme!r}{hint}; use s3://, gs://, abs:// or file://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    if scheme != "file" and not host:
        fail(where, f"{url!r} has no bucket: use {scheme}://BUCKET/path")
    if scheme == "file" and not rest.startswith("/"):
        fail(where, f"{url!r}: a file URL needs an absolute path, file:///dir")


def name_replicas(replicas):
    """Gives unnamed replicas a unique name: their type, numbered when a type repeats."""
    def kind(r):
        if "url" in r and "://" in r["url"]:
            return r["url"].split("://", 1)[0]
        return r.get("type", "file")

    used = {r["name"] for r in replicas if "name" in r}
    counts = {}
    for r in replicas:
        counts[kind(r)] = counts.get(kind(r), 0) + 1
    for i, r in enumerate(replicas):
        if "name" in r:
            continue
        name = kind(r) if counts[kind(r)] == 1 and kind(r) not in used else f"{kind(r)}{i}"
        r["name"] = name
        used.add(name)


def parse_addr(value, port=None):
    """metrics-addr -> (walship addr, host to reach it, port). Without one, a free loopback port."""
    if value is None or value == "":
        port = port or free_port()
        return f"127.0.0.1:{port}", "127.0.0.1", port
    where = f"plugins.{PLUGIN}.metrics-addr"
    text = str(value)
    if text.isdigit():
        text = ":" + text
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        fail(where, f"{value!r} is not host:port; use :9090 (loopback) or 0.0.0.0:9090")
    host = host.strip("[]")
    if host == "":
        host = "127.0.0.1"
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    addr = f"[{host}]:{port_text}" if ":" in host else f"{host}:{port_text}"
    reach = f"[{reach}]" if ":" in reach else reach
    return addr, reach, int(port_text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_walship(configured=None):
    """The walship binary: walship-path, else the one installed beside this Python, else PATH."""
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            fail(f"plugins.{PLUGIN}.walship-path", f"{configured!r} is not an executable file")
        return configured
    exe = "walship.exe" if sys.platform == "win32" else "walship"
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), exe),
        os.path.join(os.path.dirname(sys.executable), exe),
    ]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which(exe)
    if found:
        return found
    fail(
        "walship",
        f"the walship binary was not found in {candidates[0]} or on PATH; reinstall "
        "datasette-litestream from its platform wheel, or set plugins.datasette-litestream.walship-path",
    )


def check_credentials(top):
    creds = {k: top[k] for k in ("access-key-id", "secret-access-key", "session-token") if k in top}
    dynamic = [k for k in ("credentials-file", "credentials-command") if k in top]
    where = f"plugins.{PLUGIN}"
    if len(dynamic) == 2:
        fail(where, "credentials-file and credentials-command exclude each other: keep one")
    if dynamic and creds:
        fail(where, f"{dynamic[0]} excludes access-key-id/secret-access-key/session-token: keep one")
    if dynamic and "credentials-refresh-interval" not in top:
        fail(where, f"{dynamic[0]} needs credentials-refresh-interval (seconds), e.g. 3600")
    if "credentials-refresh-interval" in top:
        interval = top["credentials-refresh-interval"]
        if not dynamic:
            fail(where, "credentials-refresh-interval needs credentials-file or credentials-command")
        if not isinstance(interval, (int, float)) or interval <= 0:
            fail(f"{where}.credentials-refresh-interval", "expected a positive number of seconds")
    if creds and bool(creds.get("access-key-id")) != bool(creds.get("secret-access-key")):
        fail(where, "access-key-id and secret-access-key go together: set both")


def load_credentials(top, first=False):
    """The credentials to give walship: the static keys, or what credentials-file or
    credentials-command gives (blocking: call it in a thread)."""
    static = {k: top[k] for k in ("access-key-id", "secret-access-key", "session-token") if k in top}
    key = "credentials-file" if "credentials-file" in top else "credentials-command"
    if key not in top:
        return static
    try:
        return load_dynamic_credentials(top)
    except Exception as e:
        if first:  # the first load must work
            fail(f"plugins.{PLUGIN}.{key}", str(e))
        raise


def load_dynamic_credentials(top):
    if "credentials-file" in top:
        with open(top["credentials-file"]) as f:
            data = json.load(f)
    else:
        out = subprocess.run(
            shlex.split(top["credentials-command"]), capture_output=True, text=True, timeout=30, check=True
        )
        data = json.loads(out.stdout)
    if not isinstance(data, dict) or not data.get("access-key-id") or not data.get("secret-access-key"):
        raise ValueError("credentials must be JSON with access-key-id and secret-access-key")
    return {k: data[k] for k in ("access-key-id", "secret-access-key", "session-token") if data.get(k)}


def redact(value, key=None):
    """A copy of a config with secrets masked, and credentials in URLs removed."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if key in SECRET_KEYS and value:
        return "***REDACTED***"
    if isinstance(value, str) and ":" in value.partition("://")[2].split("/", 1)[0].rpartition("@")[0]:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value
