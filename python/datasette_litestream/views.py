"""The status page (HTML and JSON) and the restore page."""

import asyncio
import contextvars
import datetime
import json
import os
import re
import weakref

from datasette import Forbidden, Response
from datasette.database import Database
from datasette.permissions import PermissionSQL
from datasette.resources import DatabaseResource
from datasette.utils.permissions import gather_permission_sql_from_hooks
from markupsafe import Markup

from . import config

VIEW_STATUS = "litestream-view-status"
RESTORE = "litestream-restore"

# The restored copies attached to each Datasette instance: {copy name: live database name}.
# Kept apart from the supervisor so that copies stay guarded after it stops.
restored = weakref.WeakKeyDictionary()


def supervisor_for(datasette):
    from . import supervisors

    return supervisors.get(datasette)


async def check(datasette, request, action):
    if not await datasette.allowed(action=action, actor=request.actor):
        raise Forbidden("Permission denied")


# -- status -----------------------------------------------------------------------------------


async def status(datasette, request):
    await check(datasette, request, VIEW_STATUS)
    data = await status_data(datasette)
    if request.url_vars.get("format") == ".json":
        return Response.json(data)
    charts = {db["name"]: chart(data["history"], db) for db in data["databases"]}
    return Response.html(
        await datasette.render_template(
            "litestream_status.html",
            {"data": data, "charts": charts, "config_json": json.dumps(data["config"], indent=2)},
            request=request,
        )
    )


async def status_data(datasette):
    supervisor = supervisor_for(datasette)
    if supervisor is None:
        return {
            "configured": config.is_configured(datasette),
            "running": False, "pid": None, "databases": [], "skipped": [], "history": [],
            "log": [], "config": None, "error": "datasette-litestream is not configured: "
            "add plugins: {datasette-litestream: {all-replicate: [...]}} to Datasette's config",
        }  # fmt: skip
    walship, error = await supervisor.walship_status()
    settings = supervisor.settings
    by_path = {os.path.realpath(d["path"]): d for d in (walship or {}).get("databases", [])}
    # Databases whose replicas walship is still asking where TXIDs stand (up to a minute when
    # one is unreachable and the local store is empty).
    starting = {os.path.realpath(p) for p in (walship or {}).get("starting", [])}
    databases = []
    for name, entry in settings.databases.items():
        w = by_path.get(os.path.realpath(entry["path"]), {})
        unseen = "starting" if os.path.realpath(entry["path"]) in starting else "unknown"
        live = {r["name"]: r for r in w.get("replicas", [])}
        replicas = []
        for r in entry["replicas"]:
            rw = live.get(r["name"], {})
            replicas.append(
                {
                    "name": r["name"],
                    "type": rw.get("type") or replica_type(r),
                    "url": rw.get("url") or config.redact(r.get("url") or r.get("path")),
                    "state": rw.get("state", unseen),
                    **{k: rw.get(k) for k in REPLICA_FIELDS},
                }
            )
        databases.append(
            {
                "name": name,
                "path": entry["path"],
                **{k: w.get(k) for k in DB_FIELDS},
                "replicas": replicas,
            }
        )
    proc = supervisor.proc
    return {
        "configured": True,
        "running": supervisor.alive(),
        "pid": proc.pid if proc else None,
        "started_at": supervisor.started_at.isoformat() if supervisor.started_at else None,
        "restarts": supervisor.restarts,
        "last_exit": supervisor.last_exit,
        "walship_version": (walship or {}).get("version"),
        "metrics_addr": settings.addr if "metrics-addr" in settings.top else None,
        "error": error,
        "databases": databases,
        "skipped": [{"name": n, "reason": r} for n, r in settings.skipped.items()],
        "history": list(supervisor.history),
        "log": list(supervisor.logs),
        "config": config.redact(settings.walship_config()),
    }


DB_FIELDS = ["txid", "last_sync", "last_error", "captures", "full_captures", "checkpoints", "db_size", "wal_size"]
REPLICA_FIELDS = [
    "position", "lag_txids", "lag_seconds", "last_upload", "last_error", "failing_since",
    "files_uploaded", "bytes_uploaded",
]  # fmt: skip


def replica_type(r):
    if "://" in (r.get("url") or ""):
        return r["url"].split("://", 1)[0]
    return r.get("type", "file")


def chart(history, db, width=360, height=60):
    """An SVG of the last hour: the worst replica lag (line) and bytes uploaded per sample (bars)."""
    points = [p["dbs"].get(db["path"]) for p in history]
    points = [p for p in points if p]
    if len(points) < 2:
        return Markup('<p class="litestream-chart-empty">The chart fills in over the next minutes.</p>')
    lags = [max([r["lag_seconds"] or 0 for r in p["replicas"].values()] or [0]) for p in points]
    totals = [sum(r["bytes_uploaded"] or 0 for r in p["replicas"].values()) for p in points]
    rates = [max(b - a, 0) for a, b in zip(totals, totals[1:])]
    n = len(points)
    step = width / max(n - 1, 1)
    top_lag = max(lags) or 1
    top_rate = max(rates) or 1
    bars = "".join(
        f'<rect x="{(i + 1) * step - step / 2:.1f}" y="{height - r / top_rate * height:.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{r / top_rate * height:.1f}" fill="#b6d4f0"/>'
        for i, r in enumerate(rates)
    )
    line = " ".join(f"{i * step:.1f},{height - lag / top_lag * (height - 2) - 1:.1f}" for i, lag in enumerate(lags))
    return Markup(
        f'<svg class="litestream-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="lag and upload throughput, last hour">{bars}'
        f'<polyline points="{line}" fill="none" stroke="#c0392b" stroke-width="1.5"/></svg>'
        f'<p class="litestream-chart-legend"><span style="color:#c0392b">lag</span> (max {max(lags):.1f}s) '
        f'and <span style="color:#5b8fc7">bytes uploaded</span> (max {max(rates)} per '
        f"{int(10)}s), over the last {len(points) * 10 // 60} min</p>"
    )


# -- restore ----------------------------------------------------------------------------------

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?$")


def parse_timestamp(text):
    """A datetime-local value (taken as UTC) or an RFC 3339 time -> aware UTC datetime."""
    text = text.strip().replace(" ", "T")
    if not TIMESTAMP.match(text):
        raise ValueError(f"{text!r} is not a time like 2026-11-26T12:00:00Z")
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


async def run_walship(supervisor, *args, timeout=600):
    proc = await asyncio.create_subprocess_exec(
        supervisor.settings.walship, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=supervisor.settings.env(),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return 1, b"", b"timed out"
    return proc.returncode, out, err


async def restore_points(supervisor, name):
    """What the database's first replica holds (walship ltx -json): every file with its level and
    time, and the span a restore reaches, from the oldest chain start to the newest file."""
    entry = supervisor.settings.databases[name]
    supervisor.write_config()
    code, out, err = await run_walship(
        supervisor, "ltx", "-config", supervisor.config_path, "-no-expand-env", "-json",
        "-no-page-count", entry["path"], timeout=30,
    )  # fmt: skip
    if code != 0:
        return {"error": err.decode("utf-8", "replace").strip()[-500:] or f"exit code {code}"}
    doc = json.loads(out)
    files = doc.get("files", [])
    return {
        "replica": doc.get("replica") or entry["replicas"][0]["name"],
        "from": doc.get("earliest"),
        "to": doc.get("latest"),
        "max_txid": max((f["max_txid"] for f in files), default=None),
        "snapshots": [dict(f, timestamp=f["created_at"]) for f in files if f.get("level") == 9],
        "files": files,
    }


async def restore(datasette, request):
    await check(datasette, request, RESTORE)
    supervisor = supervisor_for(datasette)
    error = None
    if request.method == "POST":
        form = await request.post_vars()
        name = form.get("database", "")
        try:
            if name not in await restorable(datasette, supervisor, request.actor):
                raise ValueError(f"{name!r} is not a replicated database")
            when = parse_timestamp(form.get("timestamp", ""))
            attached = await restore_copy(datasette, supervisor, name, when)
        except ValueError as e:
            error = str(e)
        else:
            datasette.add_message(
                request,
                f"Restored {name} as of {when.isoformat()} into the read-only database {attached}",
                datasette.INFO,
            )
            return Response.redirect(datasette.urls.database(attached))
    databases = []
    for name in await restorable(datasette, supervisor, request.actor):
        databases.append({"name": name, "points": await restore_points(supervisor, name)})
    now = datetime.datetime.now(datetime.timezone.utc)
    return Response.html(
        await datasette.render_template(
            "litestream_restore.html",
            {"databases": databases, "error": error, "now": now.strftime("%Y-%m-%dT%H:%M:%S")},
            request=request,
        ),
        status=400 if error else 200,
    )


async def restorable(datasette, supervisor, actor):
    """The replicated databases this actor may view (and so restore): the others are not named."""
    if supervisor is None:
        return []
    return [
        name
        for name in supervisor.settings.databases
        if await datasette.allowed(action="view-database", resource=DatabaseResource(name), actor=actor)
    ]


async def restore_copy(datasette, supervisor, name, when):
    """walship restore as of `when` into the private directory; attach it read-only. Returns its
    name in Datasette. The live database is never touched."""
    entry = supervisor.settings.databases[name]
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    base = f"{name}_at_{stamp}"
    os.makedirs(supervisor.restore_dir, mode=0o700, exist_ok=True)
    out, i = os.path.join(supervisor.restore_dir, base + ".db"), 2
    while os.path.exists(out):
        out, i = os.path.join(supervisor.restore_dir, f"{base}_{i}.db"), i + 1
    # A time at or after the newest backup means the latest state: walship (like Litestream)
    # refuses a timestamp past its newest file, but "now" is what the form offers first.
    points = await restore_points(supervisor, name)
    latest = points.get("to")
    at = ["-timestamp", when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    if latest and when >= datetime.datetime.fromisoformat(latest.replace("Z", "+00:00")):
        at = []
    code, _, err = await run_walship(
        supervisor, "restore", "-config", supervisor.config_path, "-no-expand-env",
        *at, "-o", out, entry["path"],
    )  # fmt: skip
    if code != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"walship restore failed: {message[-1] if message else code}")
    db = datasette.add_database(Database(datasette, path=out, is_mutable=False), name=base)
    # Recorded before the next await, so no request ever sees the copy unguarded.
    restored.setdefault(datasette, {})[db.name] = name
    return db.name


# -- who sees restored copies -----------------------------------------------------------------

# Set while deciding who may see copies, so the checks made for that decision do not recurse.
_deciding = contextvars.ContextVar("datasette_litestream_deciding", default=False)
HIDDEN_REASON = (
    "datasette-litestream: a restored copy is visible only to actors allowed litestream-restore "
    "and view-database on the database it was restored from"
)


async def copies_hidden_from(datasette, actor, copies):
    """The restored copies this actor may not see: all of them, unless the actor may restore
    and may view the live database a copy came from."""
    if not await datasette.allowed(action=RESTORE, actor=actor):
        return list(copies)
    hidden = []
    for copy, live in copies.items():
        if not await datasette.allowed(action="view-database", resource=DatabaseResource(live), actor=actor):
            hidden.append(copy)
    return hidden


async def copy_permission_sql(datasette, actor, action):
    """Rules for an action on a database or anything in it (tables, views, queries), for the
    restored copies. A copy the actor may not see gets deny rules at the database level and for
    each of its children too (no table-level allow can outrank them). A copy the actor may see
    inherits every rule that names its live database, so a table hidden there stays hidden."""
    copies = dict(restored.get(datasette) or {})
    action_obj = datasette.actions.get(action)
    if not copies or _deciding.get() or action_obj is None or action_obj.resource_class is None:
        return None
    token = _deciding.set(True)
    try:
        hidden = await copies_hidden_from(datasette, actor, copies)
        visible = {copy: live for copy, live in copies.items() if copy not in hidden}
        live_rules = await gather_permission_sql_from_hooks(datasette=datasette, actor=actor, action=action) if visible else []
    finally:
        _deciding.reset(token)
    # (each key ends in "_name" so that none is a prefix of another when Datasette renames them)
    params = {f"litestream_copy_{i}_name": copy for i, copy in enumerate(visible)}
    params.update({f"litestream_live_{i}_name": live for i, live in enumerate(visible.values())})
    pairs = " UNION ALL ".join(
        f"SELECT :litestream_copy_{i}_name AS copy, :litestream_live_{i}_name AS live" for i in range(len(visible))
    )
    rules = [
        PermissionSQL(
            sql=f"SELECT m.copy AS parent, r.child, r.allow, r.reason FROM ({rule.sql}) r JOIN ({pairs}) m ON r.parent = m.live",
            params={**(rule.params or {}), **params},
        )
        for rule in live_rules
        if rule.sql
    ]
    if hidden:
        keys = [f":litestream_hidden_{i}_name" for i in range(len(hidden))]
        params = {key[1:]: name for key, name in zip(keys, hidden)}
        params["litestream_hidden_reason"] = HIDDEN_REASON
        resources = await action_obj.resource_class.resources_sql(datasette, actor=actor)
        selects = [f"SELECT {key} AS parent, NULL AS child" for key in keys]
        selects.append(f"SELECT parent, child FROM ({resources}) WHERE parent IN ({', '.join(keys)}) AND child IS NOT NULL")
        sql = "SELECT parent, child, 0 AS allow, :litestream_hidden_reason AS reason FROM (" + " UNION ALL ".join(selects) + ")"
        rules.append(PermissionSQL(sql=sql, params=params))
    return rules
