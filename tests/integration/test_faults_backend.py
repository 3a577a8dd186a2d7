"""Backend faults, made for real: each one is a failure within the check's timeout, and
each says which fault it was in its one-line summary.

Peers are real sockets on loopback (asyncio servers that misbehave on purpose), a
network namespace whose replies from one address go to a blackhole route, a
namespace address that loses every second ICMP echo (nftables `numgen`: this kernel
has no netem), and tiny UDP DNS servers that answer SERVFAIL or nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import dns.message
import dns.rcode
import pytest

from pymon.plugin import Result, Target
from pymon.probes.dns import dns_probe
from pymon.probes.http import http
from pymon.probes.icmp import fping
from pymon.probes.tcp import tcp

T = 1.0  # every probe's timeout here
SLACK = 0.6  # how much later than the timeout a result may come
needs_root_ip = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                   reason="needs root and iproute2 for network namespaces")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --- misbehaving TCP peers ------------------------------------------------------------


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, reads the request, never answers."""
    try:
        await reader.read(65536)
        await asyncio.sleep(30)
    except (asyncio.CancelledError, ConnectionError):
        pass


async def _rst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, then closes with SO_LINGER 0: the client gets an RST."""
    try:
        await reader.read(1)
    except ConnectionError:
        return
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid response (and banner), one byte a second."""
    try:
        await reader.read(65536)
        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK":
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(1)
    except (asyncio.CancelledError, ConnectionError):
        pass


GIB = 1 << 30


@dataclass
class BigBody:
    status: int = 200
    sent: int = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A 1 GiB body, as fast as the client takes it; `sent` counts what left."""
        try:
            await reader.read(65536)
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: {GIB}\r\n\r\n".encode())
            chunk = b"x" * (1 << 16)
            for _ in range(GIB // len(chunk)):
                writer.write(chunk)
                await writer.drain()
                self.sent += len(chunk)
        except (asyncio.CancelledError, ConnectionError):
            pass


@dataclass
class Peer:
    port: int
    server: asyncio.Server


@pytest.fixture
async def peers() -> AsyncIterator[Callable[[Handler], Awaitable[Peer]]]:
    started: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Handler, host: str = "127.0.0.1", **kw: object) -> Peer:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.transport.abort()
                tasks.discard(task)

        s = await asyncio.start_server(tracked, host, 0, **kw)  # type: ignore[arg-type]
        started.append(s)
        return Peer(s.sockets[0].getsockname()[1], s)

    yield start
    for s in started:
        s.close()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def timed(coro: Awaitable[Result]) -> tuple[Result, float]:
    start = time.monotonic()
    res = await coro
    return res, time.monotonic() - start


def target(host: str = "127.0.0.1") -> Target:
    return Target(host, "farm", "svc")


# --- a namespace with a blackholed address and a lossy one ---------------------------------


@dataclass
class Ns:
    name: str
    ok: str  # answers
    black: str  # assigned in the namespace; its replies go to a blackhole route
    lossy: str  # loses every second echo request (nftables numgen)


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[Ns]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")
    tag = f"{os.getpid() % 10000:04d}{random.randrange(16**3):03x}"
    name, host_if, ns_if = f"pmflt{tag}", f"pmf{tag}a", f"pmf{tag}b"
    net = f"198.{random.randrange(18, 20)}.{random.randrange(256)}."
    c = random.randrange(32) * 8
    ok, black, lossy = f"{net}{c + 2}", f"{net}{c + 3}", f"{net}{c + 4}"
    _ip("ip", "netns", "add", name)
    try:
        _ip("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        _ip("ip", "addr", "add", f"{net}{c + 1}/29", "dev", host_if)
        _ip("ip", "link", "set", host_if, "up")
        for cmd in (["link", "set", "lo", "up"], ["link", "set", ns_if, "up"],
                    ["addr", "add", f"{ok}/29", "dev", ns_if], ["addr", "add", f"{black}/29", "dev", ns_if],
                    ["addr", "add", f"{lossy}/29", "dev", ns_if],
                    ["rule", "add", "from", black, "lookup", "100"],
                    ["route", "add", "blackhole", "default", "table", "100"]):
            _ip("ip", *cmd, ns=name)
        yield Ns(name, ok, black, lossy)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# --- HTTP ------------------------------------------------------------------------------


async def test_http_faults_fail_in_time_and_say_which(peers, netns: Ns) -> None:  # type: ignore[no-untyped-def]
    silent, rst, drip = await peers(_silent), await peers(_rst), await peers(_drip)
    big, big500 = BigBody(), BigBody(500)
    p_big, p_big500 = await peers(big), await peers(big500)
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
    cases = {
        "never answers": (target(), {"port": silent.port}),
        "blackholed": (target(netns.black), {"port": 80}),
        "RST": (target(), {"port": rst.port}),
        "drips": (target(), {"port": drip.port}),
        "1 GiB body": (target(), {"port": p_big.port, "body_regex": "^OK$"}),
        "1 GiB error page": (target(), {"port": p_big500.port}),
        "refused": (target(), {"port": refused.getsockname()[1]}),
    }
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = await asyncio.gather(*(timed(http(t, {**params, "timeout": T})) for t, params in cases.values()))
    out = {}
    for name, (res, took) in zip(cases, done):
        assert not res.ok, (name, res)
        assert took < T + SLACK, (name, took)
        out[name] = res.summary
    refused.close()
    assert out == {
        "never answers": "timeout after 1s waiting for a response (connected, request sent)",
        "blackholed": "timeout after 1s connecting",
        "RST": "connection reset",
        "drips": "timeout after 1s receiving response headers (1 bytes received)",
        "1 GiB body": f"body does not match '^OK$' in the first 65536 bytes (of {GIB})",
        "1 GiB error page": "status 500 not in 200-399",
        "refused": "connection refused",
    }
    assert len(set(out.values())) == len(out)  # every fault tells itself apart
    # the 1 GiB bodies were never buffered: a bounded read, then the connection closed
    await asyncio.sleep(0.2)
    assert big.sent < 64 << 20 and big500.sent < 64 << 20, (big.sent, big500.sent)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 100 * 1024  # KiB


async def test_https_handshake_that_stalls(peers, pki) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    stall = await peers(_silent)  # TCP accepts, never a ServerHello
    res, took = await timed(http(target(), {"port": stall.port, "scheme": "https", "verify": False, "timeout": T}))
    assert not res.ok and res.summary == "timeout after 1s in TLS handshake" and took < T + SLACK

    # the handshake completes, then nothing: the other phase, said differently
    tls = await peers(_silent, ssl=pki["good"])
    res, took = await timed(http(target(), {"port": tls.port, "scheme": "https", "verify": False, "timeout": T}))
    assert not res.ok and res.summary == "timeout after 1s waiting for a response (connected, request sent)"
    assert took < T + SLACK


# --- TCP -------------------------------------------------------------------------------


async def test_tcp_faults_fail_in_time_and_say_which(peers, netns: Ns) -> None:  # type: ignore[no-untyped-def]
    silent, rst, drip = await peers(_silent), await peers(_rst), await peers(_drip)
    params = {"send": "HELLO\r\n", "expect": "^HTTP/1.1 200 OK", "timeout": T}
    cases = {
        "never answers": (target(), silent.port),
        "blackholed": (target(netns.black), 80),
        "RST": (target(), rst.port),
        "drips": (target(), drip.port),
    }
    done = await asyncio.gather(*(timed(tcp(t, {**params, "port": port})) for t, port in cases.values()))
    out = {}
    for name, (res, took) in zip(cases, done):
        assert not res.ok and took < T + SLACK, (name, res, took)
        out[name] = res.summary
    assert out == {
        "never answers": "timeout after 1s waiting for '^HTTP/1.1 200 OK' (0 bytes received)",
        "blackholed": "timeout after 1s connecting",
        "RST": "connection reset",
        "drips": "timeout after 1s waiting for '^HTTP/1.1 200 OK' (1 bytes received)",
    }
    # connect-only: the blackholed address still fails, within the timeout
    res, took = await timed(tcp(target(netns.black), {"port": 80, "timeout": T}))
    assert not res.ok and res.summary == "timeout after 1s connecting" and took < T + SLACK


# --- DNS -------------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, rcode: int | None) -> None:
        self.rcode = rcode  # None: swallow every query

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.rcode is None:
            return
        reply = dns.message.make_response(dns.message.from_wire(data))
        reply.set_rcode(self.rcode)
        self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]


async def test_dns_down_servfail_silent_blackholed(netns: Ns) -> None:
    loop = asyncio.get_running_loop()
    port = random.randrange(20000, 60000)
    made = []
    for addr, rcode in (("127.0.0.21", dns.rcode.SERVFAIL), ("127.0.0.22", None)):
        tr, _ = await loop.create_datagram_endpoint(lambda rcode=rcode: _Udp(rcode), local_addr=(addr, port))
        made.append(tr)
    try:
        hosts = ["127.0.0.21", "127.0.0.22", "127.0.0.23", netns.black]  # .23: nothing listens
        start = time.monotonic()
        res = await dns_probe([Target(h, "ns", "dns") for h in hosts],
                              {"query": "www.example.test", "port": port, "timeout": T})
        assert time.monotonic() - start < T + SLACK
    finally:
        for tr in made:
            tr.close()
    assert {h: (r.ok, r.summary) for h, r in res.items()} == {
        "127.0.0.21": (False, "SERVFAIL, expected NOERROR"),
        "127.0.0.22": (False, "timeout after 1s"),
        "127.0.0.23": (False, "connection refused"),
        netns.black: (False, "timeout after 1s"),
    }


# --- ICMP ------------------------------------------------------------------------------


@pytest.fixture
def lossy(netns: Ns) -> Iterator[str]:
    """Every second echo request to `netns.lossy` dropped (netem's `loss 50%`, made exact)."""
    if shutil.which("nft") is None:
        pytest.skip("nft (Debian's nftables) is not installed; this kernel has no netem")
    rules = f"""table inet pymonloss {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip daddr {netns.lossy} icmp type echo-request numgen inc mod 2 == 1 drop
  }}
}}"""
    subprocess.run(["ip", "netns", "exec", netns.name, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True)
    yield netns.lossy
    subprocess.run(["ip", "netns", "exec", netns.name, "nft", "delete", "table", "inet", "pymonloss"],
                   capture_output=True)


async def test_icmp_half_loss_and_blackhole(netns: Ns, lossy: str) -> None:
    hosts = [netns.ok, lossy, netns.black]
    params = {"count": 4, "interval": 0.05, "wait": 0.3, "timeout": 2, "loss": 50}
    start = time.monotonic()
    res = await fping([Target(h, "r", "ping") for h in hosts], params)
    assert time.monotonic() - start < 2 + SLACK
    assert res[netns.ok].ok and res[netns.ok].summary.startswith("0% loss, rtt ")
    assert not res[lossy].ok and res[lossy].summary.startswith("50% loss (2/4 received, rtt "), res[lossy]
    assert not res[netns.black].ok and res[netns.black].summary == "100% loss (0/4 received)"
    # mon's default (fail only at 100 % loss): the lossy host passes, and says so
    res = await fping([Target(lossy, "r", "ping")], {**params, "loss": 100})
    assert res[lossy].ok and res[lossy].summary.startswith("50% loss, rtt "), res[lossy]
