"""`dns` (group probe): ask every host of the group, each a DNS server, one question.

A group probe rather than a host probe because `soa_serial_agree` compares the
servers with each other: a secondary that stopped transferring the zone still answers
NOERROR, and only the serial shows that it is serving stale data. The servers are
queried concurrently over UDP, retrying over TCP when the answer is truncated.

Params: query (required; the name to look up), type (A), rcode (NOERROR), answer (regex that some answer
record's data must match, e.g. '^127\\.0\\.0\\.9$'), port (53), recurse (true: set RD),
tcp (false: TCP only), timeout (10), soa_serial_agree (false; when true the query is
`query SOA` and every server must report the highest serial seen in the group).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from pymon.plugin import Params, Result, Target, monitor, timeout_unless_late
from pymon.probes._common import ParamReader, bad_params, validator, describe, fmt_s


@dataclass(frozen=True)
class DnsParams:
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    rcode: dns.rcode.Rcode
    answer: re.Pattern[str] | None
    port: int
    recurse: bool
    tcp: bool
    timeout: float
    soa_serial_agree: bool


def _parse(params: Params) -> DnsParams:
    r = ParamReader(params, argv=False)
    name_text = r.string("query", None)
    qname = dns.name.root
    if name_text is None:
        r.error("query: required (the name to look up)")
    else:
        try:
            qname = dns.name.from_text(name_text)
        except dns.exception.DNSException as e:
            r.error(f"query: bad domain name {name_text!r}: {e}")
    soa = r.boolean("soa_serial_agree", False)
    type_text = r.string("type", "SOA" if soa else "A", upper=True)
    rdtype = dns.rdatatype.A
    try:
        rdtype = dns.rdatatype.from_text(type_text)
    except dns.exception.DNSException:
        r.error(f"type: unknown record type {type_text!r}")
    if soa and rdtype != dns.rdatatype.SOA:
        r.error(f"type: soa_serial_agree needs type SOA, got {type_text}")
    rcode_text = r.string("rcode", "NOERROR", upper=True)
    rcode = dns.rcode.NOERROR
    try:
        rcode = dns.rcode.from_text(rcode_text)
    except dns.exception.DNSException:
        r.error(f"rcode: unknown rcode {rcode_text!r}")
    cfg = DnsParams(
        name=qname, rdtype=rdtype, rcode=rcode, answer=r.regex("answer"),
        port=r.port("port", 53) or 53, recurse=r.boolean("recurse", True), tcp=r.boolean("tcp", False),
        timeout=r.timeout(), soa_serial_agree=soa,
    )
    r.finish()
    return cfg


validate_params = validator(_parse)
PARAM_VALIDATORS = {"dns": validate_params}


async def _address(host: str) -> str:
    """dnspython wants an address; a server named by hostname is resolved first."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        return str(infos[0][4][0])


async def _query(host: str, cfg: DnsParams) -> dns.message.Message:
    where = await _address(host)
    q = dns.message.make_query(cfg.name, cfg.rdtype)
    if not cfg.recurse:
        q.flags &= ~dns.flags.RD
    if cfg.tcp:
        return await dns.asyncquery.tcp(q, where, timeout=cfg.timeout, port=cfg.port)
    # A connected UDP socket, so that a server with nothing listening answers with
    # "connection refused" (ICMP port unreachable) instead of a silent timeout.
    backend = dns.asyncbackend.get_default_backend()
    sock = await backend.make_socket(dns.inet.af_for_address(where), socket.SOCK_DGRAM, 0, None, (where, cfg.port))
    async with sock:
        response, _ = await dns.asyncquery.udp_with_fallback(
            q, where, timeout=cfg.timeout, port=cfg.port, udp_sock=sock)
    return response


def _answers(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


def _judge(msg: dns.message.Message, cfg: DnsParams) -> Result:
    rcode = msg.rcode()
    answers = _answers(msg)
    detail = "\n".join(rrset.to_text() for rrset in msg.answer)
    if rcode != cfg.rcode:
        return Result(False, f"{dns.rcode.to_text(rcode)}, expected {dns.rcode.to_text(cfg.rcode)}", detail)
    if cfg.answer is not None:
        if not answers:
            return Result(False, f"empty answer, expected {cfg.answer.pattern!r}", detail)
        if not any(cfg.answer.search(a) for a in answers):
            return Result(False, f"no answer matches {cfg.answer.pattern!r}: {', '.join(answers[:3])}", detail)
    shown = ", ".join(answers[:3]) + (" ..." if len(answers) > 3 else "")
    return Result(True, f"{dns.rcode.to_text(rcode)}" + (f" {shown}" if shown else ""), detail)


async def _check_one(host: str, cfg: DnsParams) -> tuple[Result, dns.message.Message | None]:
    start = time.monotonic()
    msg = None
    try:
        async with timeout_unless_late(cfg.timeout):
            msg = await _query(host, cfg)
        result = _judge(msg, cfg)
    except (asyncio.TimeoutError, TimeoutError, dns.exception.Timeout):
        result = Result(False, f"timeout after {fmt_s(cfg.timeout)}")
    except Exception as e:  # probes never raise
        result = Result(False, describe(e, cfg.timeout, host), repr(e))
    result.latency_s = time.monotonic() - start
    return result, msg


def _serial(msg: dns.message.Message | None) -> int | None:
    if msg is None:
        return None
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def _compare_serials(out: dict[str, Result], msgs: dict[str, dns.message.Message | None]) -> None:
    serials = {h: s for h, s in ((h, _serial(m)) for h, m in msgs.items()) if s is not None}
    newest = max(serials.values(), default=None)
    holder = next((h for h, s in serials.items() if s == newest), "")
    for host, res in out.items():
        if not res.ok:
            continue
        serial = serials.get(host)
        if serial is None:
            out[host] = Result(False, "no SOA in answer", res.detail, res.latency_s)
        else:
            res.value = float(serial)
            if serial != newest:
                out[host] = Result(False, f"SOA serial {serial} behind {newest} on {holder}", res.detail,
                                   res.latency_s, float(serial))
            else:
                res.summary = f"SOA serial {serial}"


@monitor("dns", scope="group")
async def dns_probe(targets: list[Target], params: Params) -> dict[str, Result]:
    """Query every server of the group at once; see the module docstring."""
    try:
        cfg = _parse(params)
    except ValueError as e:
        return {t.host: bad_params(e) for t in targets}
    hosts = list(dict.fromkeys(t.host for t in targets))
    done = await asyncio.gather(*(_check_one(h, cfg) for h in hosts))
    out = {h: res for h, (res, _) in zip(hosts, done)}
    if cfg.soa_serial_agree:
        _compare_serials(out, {h: msg for h, (_, msg) in zip(hosts, done)})
    return out
