"""Redis (the head-tag cache) run as a child process: Debian's ``redis-server``, nothing persisted.

Nothing is saved (no RDB, no AOF): the cache is refilled from ``qu.head-tags.v1`` by the refresher,
so a restart that starts empty is the honest behaviour and keeps tests independent.

With a password file, Redis requires that password (AUTH): loopback is reachable by every local
user and process, and whoever can write the cache decides what the engine answers. The file is
generated once (mode 0600) and reused, so a restarted Redis keeps the password its clients hold.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

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


def ping(port: int, *, timeout: float = 0.5, host: str = "127.0.0.1", password: SecretStr | None = None) -> bool:
    """True when a Redis on ``host:port`` answers PING (an open port alone may be another service)."""
    request = b"*1\r\n$4\r\nPING\r\n"
    if password is not None:
        secret = password.get_secret_value().encode()
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) + request
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while b"\r\n" not in reply or (password is not None and reply.count(b"\r\n") < 2):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.endswith(b"+PONG\r\n")
    except OSError:
        return False


def stack_password(path: Path) -> SecretStr:
    """The password in ``path``, created there (mode 0600) when missing. Raises RedisServerError
    when others may read it: a password every local user can read protects nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite one a running stack's clients already hold; 0600 from the first byte.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _existing_password(path)
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return SecretStr(password)


def _existing_password(path: Path) -> SecretStr:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RedisServerError(
            f"the Redis password file {path} has mode {oct(mode)}, readable by others: chmod 600 it, "
            "or remove it for a new password"
        )
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise RedisServerError(f"the Redis password file {path} is empty: remove it for a new password")
    return SecretStr(text)


@dataclass
class RedisServer:
    """One ``redis-server`` on 127.0.0.1:``port``, logging to ``log_file``, working in ``workdir``;
    with ``password_file``, requiring the password kept there (see :func:`stack_password`)."""

    port: int
    log_file: Path
    workdir: Path
    password_file: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _password: SecretStr | None = field(default=None, init=False, repr=False)

    @property
    def password(self) -> SecretStr | None:
        """The password clients must send (None without a password file); known once started."""
        return self._password

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
        if self.password_file is not None:
            self._password = stack_password(self.password_file)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # Config on the command line only: no config file to drift, no daemonizing (we own the PID).
        # The password alone comes on stdin ("-"): a command line is readable by every local user.
        command = [
            str(binary),
            *(["-"] if self._password is not None else []),
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
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL if self._password is None else subprocess.PIPE,
                start_new_session=True,
            )
        if self._password is not None and self._process.stdin is not None:
            # Redis reads its stdin config to the end before it starts: write it, then close. A Redis
            # that already exited (a bad argument) closed the pipe: the wait below reports its exit.
            quoted = self._password.get_secret_value().replace("\\", "\\\\").replace('"', '\\"')
            with contextlib.suppress(BrokenPipeError), self._process.stdin as config:
                config.write(f'requirepass "{quoted}"\n'.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping(self.port, password=self._password):
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
