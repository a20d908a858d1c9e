"""One admin port per process: ``/metrics`` (Prometheus) and the probes ``/livez`` and ``/readyz``.

A pod's probes and its PodMonitor then name the same port. The server is a small threaded WSGI server in a
daemon thread, on purpose apart from the event loop: the loop beats ``Health`` (services/health.py), so a
blocked loop turns ``/livez`` into a 503 instead of a probe that merely times out with it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from services.health import Health, Probe

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

METRICS_PATH = "/metrics"
LIVENESS_PATH = "/livez"
READINESS_PATH = "/readyz"


def admin_app(metrics_app: WsgiApp, health: Health | None) -> WsgiApp:
    """``/metrics`` to ``metrics_app``; ``/livez`` and ``/readyz`` to ``health`` (200 with a JSON body when OK,
    503 with the JSON detail otherwise; 404 when there is no ``health``); anything else 404."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == METRICS_PATH:
            return metrics_app(environ, start_response)
        if health is not None and path == LIVENESS_PATH:
            return _probe(health.liveness(), start_response)
        if health is not None and path == READINESS_PATH:
            return _probe(health.readiness(), start_response)
        return _respond(start_response, "404 Not Found", {"ok": False, "reason": f"no such path: {path}"})

    return app


def _probe(probe: Probe, start_response: StartResponse) -> Iterable[bytes]:
    return _respond(start_response, "200 OK" if probe.ok else "503 Service Unavailable", probe.detail)


def _respond(start_response: StartResponse, status: str, detail: dict[str, Any]) -> Iterable[bytes]:
    body = json.dumps(detail, sort_keys=True).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
    )
    return [body]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # A request per thread, none joined at close: a slow scrape never holds up a probe, nor the process's end.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


class AdminServer:
    """The running server; ``close()`` stops it and frees the port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_admin(host: str, port: int, app: WsgiApp) -> AdminServer:
    """Serve ``app`` on ``host:port`` (IPv4 or IPv6, port 0 for any free one) from a daemon thread. Raises
    ``OSError`` when the address cannot be bound (the caller names the setting)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(_ThreadingWSGIServer):
        address_family = family

    server = make_server(str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name=f"qu-admin-{port}", daemon=True)
    thread.start()
    return AdminServer(server, thread)
