"""Start, watch, restart and stop walship, without blocking Datasette's event loop.

walship runs as a child process with its config in a private directory (mode 0700, file 0600).
A crash is logged and followed by a restart with backoff. The shutdown hook stops it with SIGTERM
(walship then makes its final sync); atexit does the same if the hook never ran, and on Linux the
child gets SIGTERM from the kernel if Datasette dies without either (PR_SET_PDEATHSIG), and its
output pipe outlives Datasette so that it can log its way through that final sync.
"""

import asyncio
import atexit
import collections
import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from . import config as configmod

log = logging.getLogger("datasette_litestream")
walship_log = logging.getLogger("datasette_litestream.walship")

LOG_LINES = 400
HISTORY_SECONDS = 3600
SAMPLE_EVERY = 10.0
POLL_DATABASES_EVERY = 2.0
STOP_TIMEOUT = 30.0

_live = set()  # supervisors to stop at exit


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def _preexec(parent):
    """In the child: own process group (Ctrl-C goes to Datasette, which then stops us with
    SIGTERM), and SIGTERM when the parent dies."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)


def _enlarge_pipe(fd, size=1 << 20):
    """Room for 1 MiB of output without a reader (Linux's default is 64 KiB); best effort."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass


class Supervisor:
    """One walship process for one Datasette instance."""

    def __init__(self, datasette, settings):
        self.datasette = datasette
        self.settings = settings
        self.dir = tempfile.mkdtemp(prefix="datasette-litestream-")  # mode 0700
        self.config_path = os.path.join(self.dir, "walship.yml")
        self.restore_dir = os.path.join(self.dir, "restored")
        self.proc = None
        self.started_at = None
        self.starts = 0
        self.restarts = 0
        self.last_exit = None  # {"code", "at"}
        self.logs = collections.deque(maxlen=LOG_LINES)
        self.history = collections.deque(maxlen=int(HISTORY_SECONDS / SAMPLE_EVERY) + 1)
        self.stopping = False
        self.task = None
        self._lock = asyncio.Lock()
        _live.add(self)

    # -- the process --------------------------------------------------------------------------

    def write_config(self):
        text = json.dumps(self.settings.walship_config(), indent=2)  # JSON is YAML
        fd = os.open(self.config_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(self.config_path + ".tmp", self.config_path)

    def spawn(self):
        """Starts walship (call on the event loop's thread: PDEATHSIG is tied to the forking thread)."""
        if not self.settings.databases:
            self.proc = None
            return
        self.write_config()
        args = [
            self.settings.walship, "replicate", "-config", self.config_path, "-no-expand-env",
        ]  # fmt: skip
        parent = os.getpid()
        read_end, write_end = os.pipe()
        # When Datasette dies, walship (told by PR_SET_PDEATHSIG) makes a final sync and logs
        # it; with no reader left on the pipe, those writes fail with EPIPE and walship's logger
        # panics (exit 101, no final sync). So where PDEATHSIG stops walship, walship holds the
        # read end too: the pipe keeps a reader, and a larger buffer takes those last lines.
        keep_open = (read_end,) if sys.platform.startswith("linux") else ()
        if keep_open:
            _enlarge_pipe(write_end)
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                pass_fds=keep_open,
                env={**self.settings.env(), "NO_COLOR": "1"},
                preexec_fn=(lambda: _preexec(parent)) if os.name == "posix" else None,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # walship's copy is the only one: EOF when it exits
        self.started_at = now()
        self.starts += 1
        self.logs.append(f"[datasette-litestream] started walship (pid {self.proc.pid})")
        output = os.fdopen(read_end, "rb")
        threading.Thread(target=self._read_output, args=(output,), daemon=True).start()

    def _read_output(self, output):
        with output:
            for raw in output:
                line = ANSI.sub("", raw.decode("utf-8", "replace").rstrip())
                self.logs.append(line)
                if " ERROR " in line or " WARN " in line or "error" in line.lower()[:40]:
                    walship_log.warning("%s", line)
                else:
                    walship_log.info("%s", line)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    async def stop_process(self, timeout=STOP_TIMEOUT):
        """SIGTERM (final sync), then SIGKILL after timeout."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            log.error("walship (pid %s) did not stop in %ss: killing it", proc.pid, timeout)
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self.logs.append(f"[datasette-litestream] walship stopped, exit code {proc.returncode}")

    def stop_now(self, timeout=10.0):
        """The atexit fallback: SIGTERM and wait, synchronously."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self):
        """Starts walship and the supervising task; a walship that fails at once (a config error
        it found) is a StartupError with its output."""
        self.spawn()
        if self.proc is not None:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    await asyncio.sleep(0.1)  # let the reader thread catch the last lines
                    tail = "\n".join(list(self.logs)[-20:])
                    self.stop_now()
                    raise configmod.StartupError(
                        f"{configmod.PLUGIN}: walship exited at start with code "
                        f"{self.proc.returncode}:\n{tail}"
                    )
                if await self.healthy():
                    break
                await asyncio.sleep(0.1)
        self.task = asyncio.get_running_loop().create_task(self.supervise())

    async def shutdown(self):
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        async with self._lock:
            await self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)

    async def restart(self, reason):
        async with self._lock:
            log.info("restarting walship: %s", reason)
            self.logs.append(f"[datasette-litestream] restarting walship: {reason}")
            await self.stop_process()
            self.spawn()

    async def supervise(self):
        backoff = 1.0
        next_start = None
        next_db_poll = next_sample = next_creds = time.monotonic()
        interval = self.settings.top.get("credentials-refresh-interval")
        while not self.stopping:
            await asyncio.sleep(0.25)
            t = time.monotonic()
            try:
                proc = self.proc
                if proc is not None and proc.poll() is not None and not self._lock.locked():
                    if next_start is None:
                        ran = (now() - self.started_at).total_seconds()
                        if ran > 60:
                            backoff = 1.0
                        self.last_exit = {"code": proc.returncode, "at": now().isoformat()}
                        log.error(
                            "walship (pid %s) exited with code %s; restarting in %.0fs. Last lines:\n%s",
                            proc.pid, proc.returncode, backoff, "\n".join(list(self.logs)[-10:]),
                        )  # fmt: skip
                        next_start = t + backoff
                        backoff = min(backoff * 2, 60.0)
                    elif t >= next_start:
                        next_start = None
                        self.restarts += 1
                        async with self._lock:
                            self.spawn()
                if t >= next_db_poll:
                    next_db_poll = t + POLL_DATABASES_EVERY
                    await self.check_databases()
                if interval and t >= next_creds:
                    next_creds = t + interval
                    await self.refresh_credentials()
                if t >= next_sample:
                    next_sample = t + SAMPLE_EVERY
                    await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("datasette-litestream supervisor")

    async def check_databases(self):
        """Rebuilds the config when databases were attached or removed; restarts walship then."""
        try:
            fresh = configmod.build(self.datasette, port=self.settings.port, previous=self.settings)
        except configmod.StartupError as e:
            log.error("%s", e)
            return
        if fresh.databases != self.settings.databases:
            added = sorted(set(fresh.databases) - set(self.settings.databases))
            removed = sorted(set(self.settings.databases) - set(fresh.databases))
            fresh.credentials = self.settings.credentials
            self.settings = fresh
            await self.restart(f"databases added {added or '-'}, removed {removed or '-'}")
        self.settings.skipped = fresh.skipped

    async def refresh_credentials(self):
        try:
            creds = await asyncio.to_thread(configmod.load_credentials, self.settings.top)
        except Exception as e:
            log.error("datasette-litestream: refreshing credentials failed, keeping the old ones: %s", e)
            return
        if creds != self.settings.credentials:
            self.settings.credentials = creds
            await self.restart("credentials changed")

    # -- walship's HTTP endpoints ---------------------------------------------------------------

    def url(self, path):
        return f"http://{self.settings.status_host}:{self.settings.port}{path}"

    async def fetch(self, path, timeout=2.0):
        def get():
            with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
                return r.read()

        return await asyncio.to_thread(get)

    async def healthy(self):
        try:
            return (await self.fetch("/healthz", timeout=0.5)).strip() == b"ok"
        except Exception:
            return False

    async def walship_status(self):
        """walship's /status document, or (None, error)."""
        if not self.alive():
            return None, "walship is not running"
        try:
            return json.loads(await self.fetch("/status")), None
        except Exception as e:
            return None, f"could not read walship's /status: {e}"

    async def sample(self):
        status, _ = await self.walship_status()
        if status is None:
            return
        point = {"t": status.get("now") or now().isoformat(), "dbs": {}}
        for db in status.get("databases", []):
            point["dbs"][db["path"]] = {
                "txid": db.get("txid"),
                "replicas": {
                    r["name"]: {
                        "lag_seconds": r.get("lag_seconds"),
                        "bytes_uploaded": r.get("bytes_uploaded", 0),
                    }
                    for r in db.get("replicas", [])
                },
            }
        self.history.append(point)


@atexit.register
def _stop_all():
    for supervisor in list(_live):
        supervisor.stop_now()
