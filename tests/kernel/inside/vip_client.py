"""A client that sends an HTTP request through a VIP every 0.1 s and logs who answered,
for counting the requests a failover loses."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Collection

from netns import enter

Answer = dict[str, Any]  # {"t": wall time sent, "who": the real server's name, or None: failed}


class VipClient:
    """From netns `ns`: a forked child of this interpreter (setns, no exec: a new process
    costs seconds under TCG) GETs vip:80 every 0.1 s and appends {"t", "who"} lines to
    root/client.jsonl; `who` is the body if it names one of `names`, else None."""

    def __init__(self, root: Path, vip: str, names: Collection[str], ns: str = "client",
                 connect_timeout: float = 1.0):
        self.out = root / "client.jsonl"
        self.stopfile = root / "client.stop"
        self.vip, self.names, self.ns, self.connect_timeout = vip, set(names), ns, connect_timeout
        self.pid = 0

    def start(self) -> None:
        self.out.write_text("")
        self.stopfile.unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:
            try:
                try:
                    enter(self.ns)
                except OSError:
                    os._exit(3)
                with open(self.out, "a") as f:
                    while not self.stopfile.exists():
                        t = time.time()
                        f.write(json.dumps({"t": t, "who": self.get()}) + "\n")
                        f.flush()
                        time.sleep(max(0.0, 0.1 - (time.time() - t)))
            finally:
                os._exit(0)
        self.pid = pid

    def get(self) -> str | None:
        try:
            with socket.create_connection((self.vip, 80), timeout=self.connect_timeout) as s:
                s.settimeout(1.0)
                s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            body = data.split(b"\r\n\r\n", 1)[1].decode().strip()
            return body if body in self.names else None
        except (OSError, IndexError):
            return None

    def stop(self) -> list[Answer]:
        """Stop the loop; every answer it logged."""
        self.stopfile.write_text("")
        os.waitpid(self.pid, 0)
        self.pid = 0
        return [json.loads(ln) for ln in self.out.read_text().splitlines() if ln.strip()]


def tally(res: list[Answer], since: float) -> tuple[list[Answer], list[Answer], dict[str, int]]:
    """(answers sent from `since` on, the failed ones among them, {who: count})."""
    after = [r for r in res if r["t"] >= since]
    who: dict[str, int] = {}
    for r in after:
        who[str(r["who"])] = who.get(str(r["who"]), 0) + 1
    return after, [r for r in after if r["who"] is None], who


def settled(res: list[Answer], live: set[str]) -> None:
    """The client's last 2 s (steady, or settled after a switch): the answers come from
    exactly the live real servers (none from a dead one); two lost requests (None) are
    tolerated, since the client's 0.5 s connect timeout is tight for a TCG guest on a
    busy host (one CI run lost 2 of 11 after a failover fail-back while both tables
    held rs2 alone, unchanged, for 5 s)."""
    tail = [r["who"] for r in res if r["t"] > time.time() - 2]
    answers = [w for w in tail if w is not None]
    assert len(answers) >= 5 and set(answers) == live, tail
    assert len(tail) - len(answers) <= 2, tail
