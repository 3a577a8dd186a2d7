"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET.

The protocol is newline-separated `KEY=VALUE` lines in one datagram to the AF_UNIX
socket named by NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). The
watchdog interval is $WATCHDOG_USEC (for us only if $WATCHDOG_PID is unset or ours);
we ping at half of it. Without NOTIFY_SOCKET every call is a no-op, and a send that
fails is logged once, never raised: systemd being away must not stop monitoring.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping


class Notifier:
    def __init__(self, address: str | None, log: Any = None, env: Mapping[str, str] | None = None):
        self.address = address
        self.log = log
        self.env = os.environ if env is None else env
        self.failed = False
        self.sock: socket.socket | None = None

    @classmethod
    def from_env(cls, log: Any = None, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None, log, env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _sockaddr(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.sendto("\n".join(lines).encode(), self._sockaddr())
        except OSError as e:
            if not self.failed and self.log is not None:
                self.log.warning("notify.failed", socket=self.address, error=str(e))
            self.failed = True
            return False
        return True

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
        usec = self.env.get("WATCHDOG_USEC")
        pid = self.env.get("WATCHDOG_PID")
        if not usec or not self.enabled:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        try:
            n = int(usec)
        except ValueError:
            return None
        return n / 2 / 1e6 if n > 0 else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
