"""An example Alertmanager webhook receiver for the Compose stack (the `alert-receiver` service).

It prints one JSON line per alert it receives (`docker compose logs -f alert-receiver`) and keeps the last
1,000 payloads, with the path they were posted to, for `GET /alerts`. It stands in for your pager and
ticket system: point the receivers in deploy/alertmanager.yml at those and drop this service.
Python's standard library only, so it runs in the exporter image.
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PORT = 5001
MAX_BODY = 1 << 20
PAYLOADS: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, b"too large\n")
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self._reply(400, b"not JSON\n")
            return
        if not isinstance(payload, dict):
            self._reply(400, b"not a webhook payload\n")
            return
        with LOCK:
            PAYLOADS.append({"path": self.path, **payload})
        for alert in payload.get("alerts") or []:
            labels = alert.get("labels") or {}
            line = {"path": self.path, "status": alert.get("status"), **labels}
            line["summary"] = (alert.get("annotations") or {}).get("summary", "")
            print(json.dumps(line, sort_keys=True), flush=True)
        self._reply(200)

    def do_GET(self) -> None:
        if self.path == "/-/healthy":
            self._reply(200, b"OK\n")
        elif self.path == "/alerts":
            with LOCK:
                body = json.dumps(list(PAYLOADS)).encode()
            self._reply(200, body, "application/json")
        else:
            self._reply(404, b"not found\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per alert is printed above; access logs would drown it


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)  # inside the container; published on loopback
    # As PID 1 in a container, SIGTERM is ignored unless handled: `docker stop` would wait 10 s, then kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"alert-receiver: listening on :{PORT}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
