"""A real HTTP receiver of webhooks on 127.0.0.1: a threaded ``http.server`` that
records every POST and answers as the test says (a status, or hanging)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.wait import wait_for


@dataclass(frozen=True)
class Received:
    """One request as the receiver read it."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records POSTs; answers `status`, or holds each request while `hang` is set."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.status = 200
        self.hang = threading.Event()
        self.released = threading.Event()
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                if receiver.hang.is_set():
                    receiver.released.wait(timeout=120)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def received(self, count: int, timeout: float = 30) -> list[Received]:
        """Wait until at least `count` requests came; all of them."""
        wait_for(
            lambda: len(self.requests) >= count,
            timeout=timeout,
            message=f"{count} webhook request(s) (got {len(self.requests)})",
        )
        with self._lock:
            return list(self.requests)
