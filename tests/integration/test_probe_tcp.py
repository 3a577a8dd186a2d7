"""The tcp and telnet probes against real asyncio servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from pymon.plugin import Target
from pymon.probes import validate_params
from pymon.probes import tcp as probe
from pymon.probes.tcp import DO, DONT, IAC, SB, SE, WILL, WONT, TelnetFilter

T = Target("127.0.0.1", "mail", "smtp")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A one-handler TCP server that records what clients sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handler(reader, writer)
            await writer.drain()
            try:
                self.received.append(await asyncio.wait_for(reader.read(1024), 0.5))
            except (asyncio.TimeoutError, ConnectionError, asyncio.CancelledError):
                pass
        finally:
            writer.close()

    async def __aenter__(self) -> "Peer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def banner(text: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text)

    return handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connect_only() -> None:
    async with Peer(banner(b"")) as p:
        r = await probe.tcp(T, {"port": p.port, "timeout": 2})
    assert r.ok and r.summary == f"connected to port {p.port}"


async def test_smtp_banner() -> None:
    async with Peer(banner(b"220 mx.example.test ESMTP\r\n")) as p:
        r = await probe.tcp(T, {"port": p.port, "expect": "^220 ", "timeout": 2})
        assert r.ok and r.summary == "banner matches '^220 '"
        r = await probe.tcp(T, {"port": p.port, "expect": "^\\+OK", "timeout": 2})
        assert not r.ok and r.summary == "banner does not match '^\\\\+OK'"
        assert "ESMTP" in r.detail


async def test_banner_in_pieces() -> None:
    async def slow_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in (b"22", b"0 ftp", b".example.test ready\r\n"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)

    async with Peer(slow_banner) as p:
        r = await probe.tcp(T, {"port": p.port, "expect": "^220 ftp\\.", "timeout": 2})
    assert r.ok, r


async def test_send_and_expect() -> None:
    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"PONG " + line)

    async with Peer(pong) as p:
        r = await probe.tcp(T, {"port": p.port, "send": "PING 42\r\n", "expect": "^PONG PING 42", "timeout": 2})
    assert r.ok, r


async def test_send_without_expect_is_written() -> None:
    async with Peer(banner(b"")) as p:
        r = await probe.tcp(T, {"port": p.port, "send": "QUIT\r\n", "timeout": 2})
        assert r.ok
        await asyncio.sleep(0.1)
    assert p.received == [b"QUIT\r\n"]


async def test_refused_timeout_and_close() -> None:
    r = await probe.tcp(T, {"port": free_port(), "timeout": 2})
    assert not r.ok and r.summary == "connection refused"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with Peer(silent) as p:
        start = time.monotonic()
        r = await probe.tcp(T, {"port": p.port, "expect": "^220", "timeout": 0.3})
        assert not r.ok and r.summary == "timeout after 0.3s waiting for '^220' (0 bytes received)"
        assert time.monotonic() - start < 1

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with Peer(hang_up) as p:
        r = await probe.tcp(T, {"port": p.port, "expect": "^220", "timeout": 2})
    assert not r.ok and r.summary == "connection closed before '^220'"


async def test_max_read_bound() -> None:
    async with Peer(banner(b"x" * 100_000 + b"220")) as p:
        r = await probe.tcp(T, {"port": p.port, "expect": "220", "max_read": 1000, "timeout": 2})
    assert not r.ok and r.summary == "first 1000 bytes do not match '220'"


async def test_telnet_negotiation_refused_and_stripped() -> None:
    negotiation = bytes([IAC, DO, 1, IAC, WILL, 3, IAC, SB, 24, 1, IAC, SE, IAC, DO, 31])

    async def telnetd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(negotiation)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"\r\nDebian GNU/Linux 12\r\nhost login: ")

    async with Peer(telnetd) as p:
        r = await probe.telnet(T, {"port": p.port, "timeout": 2})
        assert r.ok, r
        assert r.summary == "banner matches 'login:'"
        assert "\xff" not in r.detail and r.detail.startswith("\r\nDebian")
        await asyncio.sleep(0.1)
    assert p.received == [bytes([IAC, WONT, 1, IAC, DONT, 3, IAC, WONT, 31])]


async def test_telnet_defaults_and_mon_args() -> None:
    assert probe._parse_telnet({}).port == 23
    assert probe._parse_telnet({}).expect.pattern == "login:"  # type: ignore[union-attr]
    assert validate_params("telnet", {}) == []
    assert validate_params("tcp", {}) == ["port: required"]
    assert validate_params("tcp", {"argv": ["-p", "25"]}) == []
    assert validate_params("tcp", {"argv": ["-p", "25", "-q"]}) == ["argv: tcp.monitor: option -q not recognized"]
    assert validate_params("tcp", {"port": 70000, "expect": "("})[0] == "port: not a TCP/UDP port: 70000"
    async with Peer(banner(b"+OK POP3 ready\r\n")) as p:
        r = await probe.tcp(T, {"argv": ["-p", str(p.port), "-t", "2"], "expect": r"^\+OK"})
    assert r.ok, r
    r = await probe.tcp(T, {})
    assert not r.ok and r.summary == "bad params: port: required"


async def test_telnet_mon_args() -> None:
    assert probe.from_telnet_args(["-l", "/ogin:/i", "-p", "2323"]) == {"expect": "(?i)ogin:", "port": "2323"}
    assert probe.from_telnet_args([]) == {"expect": "(?i)ogin:"}
    async with Peer(banner(b"router LOGIN: ")) as p:
        r = await probe.telnet(T, {"argv": ["-p", str(p.port), "-t", "2"]})
        assert r.ok, r
        r = await probe.telnet(T, {"argv": ["-p", str(p.port), "-t", "0.3", "-l", "/^Password/"]})
        assert r.summary.startswith("timeout after 0.3s waiting for '^Password' (")


def test_telnet_filter_split_sequences() -> None:
    f = TelnetFilter()
    data = bytes([ord("a"), IAC]) + bytes([DO]) + bytes([1, ord("b"), IAC, IAC, IAC, SB, 1, 2])
    out, reply = b"", b""
    for i in range(len(data)):  # byte by byte: every sequence is split somewhere
        o, r = f.feed(data[i:i + 1])
        out, reply = out + o, reply + r
    o, r = f.feed(bytes([IAC, SE, ord("c")]))
    assert out + o == b"ab\xffc"
    assert reply + r == bytes([IAC, WONT, 1])
