"""The engine's Kafka clients attempt SASL_SSL with SCRAM-SHA-512 as configured, against a local TLS socket.

tansu (the embedded broker) speaks neither TLS nor SASL, so this stands in for a Strimzi TLS listener: a Python
TLS server with a certificate signed by a test CA (given as QU_KAFKA_SSL_CA_FILE) that answers just enough
of the Kafka protocol (ApiVersions, SaslHandshake) to see each client verify the certificate, ask for the
configured mechanism and start SCRAM as the configured user. It checks the clients' configuration, not a
broker's authentication.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError as AIOKafkaError
from confluent_kafka import KafkaException
from pydantic import SecretStr

from services.kafka_clients import producer
from services.kafka_security import KafkaSecurity
from services.replay.recorder import TrafficRecorder

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 18, 17, 36, 3


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, and server.crt / server.key for localhost signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=qu test cluster CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf", cwd=d)  # fmt: skip
    return d


@dataclass
class Seen:
    handshakes: int = 0
    server_names: list[str | None] = field(default_factory=list)
    api_keys: list[int] = field(default_factory=list)
    mechanisms: list[str] = field(default_factory=list)
    sasl_first_messages: list[bytes] = field(default_factory=list)


def _read_frame(conn: ssl.SSLSocket) -> bytes | None:
    head = _read_exactly(conn, 4)
    return None if head is None else _read_exactly(conn, struct.unpack(">i", head)[0])


def _read_exactly(conn: ssl.SSLSocket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _respond(conn: ssl.SSLSocket, correlation_id: int, body: bytes) -> None:
    payload = struct.pack(">i", correlation_id) + body
    conn.sendall(struct.pack(">i", len(payload)) + payload)


def _serve_one(conn: ssl.SSLSocket, seen: Seen) -> None:
    while (frame := _read_frame(conn)) is not None:
        api_key, version, correlation_id = struct.unpack(">hhi", frame[:8])
        seen.api_keys.append(api_key)
        (client_id_len,) = struct.unpack(">h", frame[8:10])
        body = frame[10 + max(client_id_len, 0) :]
        if api_key == API_VERSIONS:
            # v0 layout; a newer request is told UNSUPPORTED_VERSION (35) and retries with v0 (KIP-511).
            apis = [(API_VERSIONS, 0, 0), (SASL_HANDSHAKE, 0, 1), (SASL_AUTHENTICATE, 0, 0), (METADATA, 0, 1)]
            listed = b"".join(struct.pack(">hhh", *a) for a in apis)
            _respond(conn, correlation_id, struct.pack(">hi", 35 if version else 0, len(apis)) + listed)
        elif api_key == SASL_HANDSHAKE:
            (length,) = struct.unpack(">h", body[:2])
            mechanism = body[2 : 2 + length].decode()
            seen.mechanisms.append(mechanism)
            _respond(conn, correlation_id, struct.pack(">hih", 0, 1, len(mechanism)) + mechanism.encode())
        else:  # SaslAuthenticate (or a raw SCRAM frame): the client-first-message names the user; stop there
            seen.sasl_first_messages.append(body)
            return


@pytest.fixture
def tls_listener(pki: Path) -> Iterator[tuple[int, Seen]]:
    seen = Seen()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    context.sni_callback = lambda _sock, name, _ctx: seen.server_names.append(name)  # type: ignore[assignment,func-returns-value]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    seen.handshakes += 1
                    _serve_one(conn, seen)
            except (OSError, ssl.SSLError, struct.error):
                continue  # a client that gave up, or refused the certificate: nothing is recorded

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], seen
    stop.set()
    thread.join(5)
    listener.close()


def _security(pki: Path) -> KafkaSecurity:
    return KafkaSecurity(
        protocol="SASL_SSL", username="qu-engine", password=SecretStr("not-sent-here"), ca_file=pki / "ca.crt"
    )


def _assert_scram_over_verified_tls(seen: Seen) -> None:
    assert seen.handshakes >= 1  # the client accepted a certificate signed by QU_KAFKA_SSL_CA_FILE
    assert "localhost" in seen.server_names  # SNI: the name it verifies the certificate against
    assert "SCRAM-SHA-512" in seen.mechanisms
    assert any(b"n=qu-engine,r=" in m for m in seen.sasl_first_messages)  # SCRAM client-first-message
    assert not any(b"not-sent-here" in m for m in seen.sasl_first_messages)  # SCRAM never sends the password


def test_confluent_kafka_attempts_sasl_ssl(pki: Path, tls_listener: tuple[int, Seen]) -> None:
    port, seen = tls_listener
    client = producer(f"localhost:{port}", security=_security(pki), **{"broker.address.family": "v4"})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    _assert_scram_over_verified_tls(seen)


def test_aiokafka_attempts_sasl_ssl(pki: Path, tls_listener: tuple[int, Seen], tmp_path: Path) -> None:
    port, seen = tls_listener
    recorder = TrafficRecorder(f"localhost:{port}", tmp_path, security=_security(pki))

    async def start() -> None:
        try:
            await recorder.start()
        finally:
            await recorder.stop()

    with pytest.raises((AIOKafkaError, TimeoutError)):  # the stand-in never completes SCRAM
        asyncio.run(asyncio.wait_for(start(), 20))
    _assert_scram_over_verified_tls(seen)


def test_a_certificate_from_another_ca_is_refused(tls_listener: tuple[int, Seen], tmp_path: Path) -> None:
    """The CA file is really used: trusting only another CA, the client never gets to SASL."""
    port, seen = tls_listener
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt",
             "-days", "1", "-subj", "/CN=another CA", cwd=tmp_path)  # fmt: skip
    other = KafkaSecurity(
        protocol="SASL_SSL", username="qu-engine", password=SecretStr("x"), ca_file=tmp_path / "other.crt"
    )
    client = producer(f"localhost:{port}", security=other, **{"broker.address.family": "v4"})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=3)
    assert seen.mechanisms == []
