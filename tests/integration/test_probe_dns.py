"""The dns group probe against real dnsmasq servers on loopback addresses."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import dns.message
import dns.query
import pytest

from pymon.plugin import Target
from pymon.probes import validate_params
from pymon.probes.dns import dns_probe as probe

pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")

BIG_TXT = ",".join(["t" * 200] * 5)  # 1000+ bytes: truncated over UDP, needs TCP


def free_port(addr: str) -> int:
    """A port free for both UDP and TCP on `addr`."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_DGRAM) as u, socket.socket(family) as t:
            u.bind((addr, 0))
            port = u.getsockname()[1]
            try:
                t.bind((addr, port))
            except OSError:
                continue
            return port


class Dnsmasq:
    def __init__(self, addr: str, port: int, serial: int) -> None:
        self.addr, self.port = addr, port
        self.proc = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
             f"--port={port}", f"--listen-address={addr}", "--bind-interfaces",
             "--address=/example.test/127.0.0.9", "--address=/nx.test/",
             f"--txt-record=big.example.test,{BIG_TXT}",
             f"--auth-server=ns.zone.test,{addr}", "--auth-zone=zone.test",
             f"--auth-soa={serial},hostmaster.zone.test"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                dns.query.udp(dns.message.make_query("ready.example.test", "A"), addr, port=port, timeout=0.2)
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dnsmasq did not start: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, object]]:
    """Three dnsmasq on one port: .2 and .3 at SOA serial 7, .4 lagging at serial 6."""
    addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = free_port(addrs[0])
    started: list[Dnsmasq] = []
    try:
        for addr, serial in zip(addrs, (7, 7, 6)):
            started.append(Dnsmasq(addr, port, serial))
        yield {"port": port, "addrs": addrs}
    finally:
        for d in started:
            d.stop()


def targets(*hosts: str) -> list[Target]:
    return [Target(h, "ns", "dns") for h in hosts]


async def test_answer(servers: dict[str, object]) -> None:
    res = await probe(targets("127.0.0.2", "127.0.0.3"),
                      {"query": "www.example.test", "answer": r"^127\.0\.0\.9$", "port": servers["port"], "timeout": 2})
    assert set(res) == {"127.0.0.2", "127.0.0.3"}
    for r in res.values():
        assert r.ok, r
        assert r.summary == "NOERROR 127.0.0.9"
        assert "www.example.test. 0 IN A 127.0.0.9" in r.detail


async def test_answer_mismatch_and_empty(servers: dict[str, object]) -> None:
    params = {"port": servers["port"], "timeout": 2}
    res = await probe(targets("127.0.0.2"), {**params, "query": "www.example.test", "answer": "^10\\."})
    assert res["127.0.0.2"].summary == "no answer matches '^10\\\\.': 127.0.0.9"
    res = await probe(targets("127.0.0.2"), {**params, "query": "zone.test", "type": "a", "answer": "."})
    assert not res["127.0.0.2"].ok
    assert res["127.0.0.2"].summary == "empty answer, expected '.'"


async def test_nxdomain(servers: dict[str, object]) -> None:
    params = {"port": servers["port"], "timeout": 2, "query": "host.nx.test"}
    r = (await probe(targets("127.0.0.2"), params))["127.0.0.2"]
    assert not r.ok and r.summary == "NXDOMAIN, expected NOERROR"
    r = (await probe(targets("127.0.0.2"), {**params, "rcode": "nxdomain"}))["127.0.0.2"]
    assert r.ok and r.summary == "NXDOMAIN"
    r = (await probe(targets("127.0.0.2"), {**params, "query": "elsewhere.test"}))["127.0.0.2"]
    assert r.summary == "REFUSED, expected NOERROR"


async def test_truncated_answer_retried_over_tcp(servers: dict[str, object]) -> None:
    msg = dns.query.udp(dns.message.make_query("big.example.test", "TXT"), "127.0.0.2",
                        port=servers["port"], timeout=2)  # type: ignore[arg-type]
    assert msg.flags & dns.flags.TC and not msg.answer  # the server really truncates
    res = await probe(targets("127.0.0.2"), {"query": "big.example.test", "type": "TXT", "answer": "t{200}",
                                             "port": servers["port"], "timeout": 2})
    assert res["127.0.0.2"].ok, res
    res = await probe(targets("127.0.0.2"), {"query": "big.example.test", "type": "TXT", "tcp": True,
                                             "port": servers["port"], "timeout": 2})
    assert res["127.0.0.2"].ok, res


async def test_down_servers_fail_per_host(servers: dict[str, object]) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.6", servers["port"]))  # type: ignore[arg-type]
    try:
        start = time.monotonic()
        res = await probe(targets("127.0.0.2", "127.0.0.5", "127.0.0.6"),
                          {"query": "www.example.test", "port": servers["port"], "timeout": 0.5})
        assert time.monotonic() - start < 1.5
    finally:
        silent.close()
    assert res["127.0.0.2"].ok
    assert res["127.0.0.5"].summary == "connection refused"
    assert res["127.0.0.6"].summary == "timeout after 0.5s"


async def test_soa_serial_agree(servers: dict[str, object]) -> None:
    params = {"query": "zone.test", "soa_serial_agree": True, "port": servers["port"], "timeout": 2}
    res = await probe(targets("127.0.0.2", "127.0.0.3"), params)
    assert [r.summary for r in res.values()] == ["SOA serial 7", "SOA serial 7"]
    assert all(r.ok and r.value == 7 for r in res.values())
    res = await probe(targets("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"), params)
    assert res["127.0.0.2"].ok and res["127.0.0.3"].ok
    assert not res["127.0.0.4"].ok and res["127.0.0.4"].summary == "SOA serial 6 behind 7 on 127.0.0.2"
    assert res["127.0.0.5"].summary == "connection refused"
    # a server that answers without SOA cannot agree
    res = await probe(targets("127.0.0.2"), {**params, "query": "other.test", "rcode": "REFUSED"})
    assert res["127.0.0.2"].summary == "no SOA in answer"


async def test_ipv6_server() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port("::1")
    server = Dnsmasq("::1", port, 1)
    try:
        res = await probe(targets("::1"), {"query": "zone.test", "type": "SOA", "answer": " 1 ", "port": port,
                                           "timeout": 2})
        assert res["::1"].ok, res
    finally:
        server.stop()


async def test_hostname_as_server(servers: dict[str, object]) -> None:
    res = await probe(targets("localhost"), {"query": "x", "port": free_port("127.0.0.1"), "timeout": 1})
    assert res["localhost"].summary in ("connection refused", "timeout after 1s")


async def test_params() -> None:
    assert validate_params("dns", {"query": "example.test", "type": "MX", "rcode": "SERVFAIL", "answer": "x"}) == []
    assert validate_params("dns", {"type": "XX", "rcode": "OOPS", "argv": ["-x"]}) == [
        "query: required (the name to look up)", "type: unknown record type 'XX'", "rcode: unknown rcode 'OOPS'",
        "argv: this probe takes no mon-style options; give params instead"]
    assert validate_params("dns", {"query": "z", "soa_serial_agree": True, "type": "A"}) == [
        "type: soa_serial_agree needs type SOA, got A"]
    res = await probe(targets("a", "b"), {})
    assert all(r.summary == "bad params: query: required (the name to look up)" for r in res.values())
