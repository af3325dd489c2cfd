"""A webhook receiver for the tests: an HTTP server on 127.0.0.1 that records every POST and
answers each path with the status the test chose (200 unless told otherwise)."""

from __future__ import annotations

import base64
import http.server
import threading
from dataclasses import dataclass, field

from standardwebhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"schizodot-test-webhook-secret-01").decode()
SECRET_ENV = "SCHIZODOT_TEST_WEBHOOK_SECRET"  # the stack's results process reads the secret from it


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str = SECRET) -> dict:
        """The body as the Standard Webhooks reference verifier reads it (raises when the signature is wrong)."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class WebhookReceiver:
    statuses: dict[str, int] = field(default_factory=dict)  # path -> status (default 200)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.get(self.path, 200))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]
