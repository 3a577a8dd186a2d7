"""The guest's real servers: HTTP on 10.0.0.11:80 and 10.0.0.12:80 (a dummy interface).

GET /health answers 200, or 503 while /run/backend/down-ADDR exists. While
/run/backend/slow exists every answer waits 3 s first, and each slow request's start and
end (CLOCK_MONOTONIC, systemd's monotonic timestamps) go to /run/backend/slow.log.
Debian's python3 only: the guest's own, not pymon's venv.
"""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAGS = "/run/backend"
SLOW_S = 3.0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        addr = self.server.server_address[0]
        if os.path.exists(f"{FLAGS}/slow"):
            start = time.monotonic()
            time.sleep(SLOW_S)
            with open(f"{FLAGS}/slow.log", "a") as f:
                f.write(f"{addr} {start:.6f} {time.monotonic():.6f}\n")
        down = os.path.exists(f"{FLAGS}/down-{addr}")
        body = b"down\n" if down else b"ok\n"
        self.send_response(503 if down else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


os.makedirs(FLAGS, exist_ok=True)
servers = [ThreadingHTTPServer((a, 80), Handler) for a in ("10.0.0.11", "10.0.0.12")]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
