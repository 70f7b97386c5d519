"""What the benchmarks (and `make orderfile`) share: loopback ports, moto's S3 server, symbols."""

import os
import socket
import subprocess
import sys
import time

MOTO = os.path.join(os.path.dirname(sys.executable), "moto_server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what=None, timeout=30):
    """Returns once something listens on 127.0.0.1:port; exits naming `what` if nothing does."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what or 'nothing'} did not start listening on port {port}")


class MotoServer:
    """moto's S3 server on a free loopback port, logging into `workdir`, answering when made."""

    def __init__(self, workdir):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(workdir, "moto.log"), "w")
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=self.log)
        wait_port(self.port, f"moto_server (see {self.log.name})")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def function_symbols(binary):
    """The functions `binary` defines, by their (mangled) symbol names; empty if it is stripped."""
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
    return {f[2] for f in (l.split() for l in out.stdout.splitlines()) if len(f) == 3 and f[1] in "tTwW"}
