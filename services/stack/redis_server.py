"""Redis (the head-tag cache) run as a child process: Debian's ``redis-server``, nothing persisted.

Nothing is saved (no RDB, no AOF): the cache is refilled from ``qu.head-tags.v1`` by the refresher,
so a restart that starts empty is the honest behaviour and keeps tests independent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.errors import QuError
from services.stack.ports import port_in_use, terminate

MISSING_BINARY_HINT = "install redis-server (apt-get install -y redis-server) or set QU_REDIS_URL to a running Redis"


class RedisServerError(QuError):
    pass


def redis_server_binary() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError(f"the redis-server binary is not on PATH: {MISSING_BINARY_HINT}")
    return Path(found)


def ping(port: int, *, timeout: float = 0.5, host: str = "127.0.0.1") -> bool:
    """True when a Redis on ``host:port`` answers PING (an open port alone may be another service)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` on 127.0.0.1:``port``, logging to ``log_file``, working in ``workdir``."""

    port: int
    log_file: Path
    workdir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, *, timeout: float = 10.0) -> None:
        binary = redis_server_binary()
        if port_in_use(self.port):
            raise RedisServerError(f"port {self.port} is already in use: choose another Redis port (QU_REDIS_PORT)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # Config on the command line only: no config file to drift, no daemonizing (we own the PID).
        command = [
            str(binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
        ]
        # Its log goes to stdout (no --logfile) so that errors printed before logging starts,
        # such as a bad argument, land in the same file.
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping(self.port):
                return
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RedisServerError(f"redis-server exited with code {code} on port {self.port}; see {self.log_file}")
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer PING on port {self.port} within {timeout:.0f} s")

    def stop(self, *, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        terminate(process, timeout=timeout)
