"""A tiny HTTP-over-unix-socket client for the tests (stdlib only, independent of pymon's),
and a running daemon's API as the tests use it."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daemons import Daemon


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(sock: Path, method: str, path: str, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, Any]:
    conn = UnixHTTP(str(sock), timeout)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def wait_socket(sock: Path, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sock.exists():
            try:
                if call(sock, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no control socket at {sock}")


A, B = "127.0.0.1", "127.0.0.2"


class Running:
    def __init__(self, tmp: Path, d: Daemon, port: int):
        self.tmp, self.d, self.port = tmp, d, port
        self.sock = tmp / "pymon.sock"
        wait_socket(self.sock)
        self.token = (tmp / "token").read_text().strip()

    def call(self, method: str, path: str, body: Any = None, token: str | None = "") -> tuple[int, Any]:
        return call(self.sock, method, path, self.token if token == "" else token, body)

    def svc(self, name: str) -> dict[str, Any]:
        code, st = self.call("GET", "/status")
        assert code == 200
        return next(s for s in st["services"] if s["service"] == name)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pymon", *args, "-c", str(self.tmp / "pymon.yaml")],
                              capture_output=True, text=True, timeout=60)
