"""The hand-built IPVS generic-netlink codec against pyroute2's, message by message.

Requests: ours and pyroute2's encoding of the same request decode (with pyroute2's
parser) to the same attributes, in any order. Replies: messages pyroute2 builds
the way the kernel sends them (16-byte addresses, STATS or STATS64, connection
counts) parse to the model the kernel holds.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pyroute2 import IPVSDest, IPVSService
from pyroute2.netlink.generic import ipvs as p2

from pymon.ipvs import kernel as k
from pymon.ipvs.table import SVC_F_ONEPACKET, Dest, Op, Service, ServiceKey, Stats

FAMILY = 0x23
V4 = Service(ServiceKey("tcp", "10.0.0.1", 80), "wrr")
V4P = Service(ServiceKey("udp", "10.0.0.9", 53), "sh", persistence=300, netmask=24, flags=SVC_F_ONEPACKET | 0x8)
V6 = Service(ServiceKey("sctp", "2001:db8::1", 443), "wlc", persistence=60, netmask=64)
FWM = Service(ServiceKey(fwmark=7, family=6), "rr")
DESTS = [Dest("10.0.0.2", 80, "dr", 3), Dest("10.0.0.3", 8080, "nat", 0, 100, 10),
         Dest("2001:db8::2", 443, "tun", 5)]


def _tree(attrs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {name: _tree(v["attrs"]) if isinstance(v, dict) and "attrs" in v else v for name, v in attrs}


def _decode(data: bytes) -> dict[str, Any]:
    msg = p2.ipvsmsg(data)
    msg.decode()
    return {"type": msg["header"]["type"], "flags": msg["header"]["flags"], "seq": msg["header"]["sequence_number"],
            "cmd": msg["cmd"], "version": msg["version"], "attrs": _tree(msg["attrs"])}


def _p2_service(svc: Service, full: bool) -> Any:
    key = svc.key
    kw: dict[str, Any] = {"af": socket.AF_INET6 if key.family == 6 else socket.AF_INET}
    if key.fwmark is not None:
        kw["fwmark"] = key.fwmark
    else:
        kw.update(protocol=k.PROTOCOLS[key.protocol], addr=key.address, port=key.port)  # type: ignore[index]
    if not full:
        return kw
    mask = (socket.inet_ntoa(svc.netmask.to_bytes(4, "little")) if key.family == 6  # type: ignore[union-attr]
            else socket.inet_ntoa(((0xFFFFFFFF << (32 - svc.netmask)) & 0xFFFFFFFF).to_bytes(4, "big")))  # type: ignore[operator]
    kw.update(sched_name=svc.scheduler, timeout=svc.persistence, netmask=mask,
              flags={"flags": svc.kernel_flags, "mask": 0xFFFFFFFF})
    return kw


def _p2_request(op: Op, seq: int) -> bytes:
    """pyroute2's encoding of the same request (what the old backend sent)."""
    msg = p2.ipvsmsg()
    cmds = {("service", "add"): 1, ("service", "edit"): 2, ("service", "del"): 3,
            ("dest", "add"): 5, ("dest", "edit"): 6, ("dest", "del"): 7}
    msg["cmd"] = cmds[(op.target, op.action)]
    msg["version"] = 1
    msg["header"]["type"] = FAMILY
    msg["header"]["flags"] = k.NLM_F_REQUEST | k.NLM_F_ACK
    msg["header"]["sequence_number"] = seq
    full_svc = op.dest is None and op.action != "del"
    svc = IPVSService(**_p2_service(op.service, full_svc))
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", svc.dump_nla() if full_svc else svc.dump_key())]
    if op.dest is not None:
        d = op.dest
        dkw: dict[str, Any] = {"addr": d.address, "port": d.port,
                               "addr_family": socket.AF_INET6 if d.family == 6 else socket.AF_INET}
        if op.action == "del":
            fields = [("IPVS_DEST_ATTR_ADDR", d.address), ("IPVS_DEST_ATTR_PORT", d.port),
                      ("IPVS_DEST_ATTR_ADDR_FAMILY", dkw["addr_family"])]
            msg["attrs"].append(("IPVS_CMD_ATTR_DEST", {"attrs": fields}))
        else:
            dkw.update(fwd_method=k._FWD_TO_KERNEL[d.forwarding], weight=d.weight,
                       u_thresh=d.upper_threshold, l_thresh=d.lower_threshold)
            dest = IPVSDest(**dkw)
            for extra in ("tun_type", "tun_port", "tun_flags"):  # pyroute2 defaults we do not send
                dest.pop(extra, None)
            msg["attrs"].append(("IPVS_CMD_ATTR_DEST", dest.dump_nla()))
    msg.encode()
    return bytes(msg.data)


OPS = ([Op(a, s) for s in (V4, V4P, V6, FWM) for a in ("add", "edit", "del")]
       + [Op(a, s, d) for s in (V4, FWM) for d in DESTS[:2] for a in ("add", "edit", "del")]
       + [Op(a, V6, DESTS[2]) for a in ("add", "edit", "del")])


@pytest.mark.parametrize("op", OPS, ids=str)
def test_request_decodes_like_pyroute2s(op: Op) -> None:
    ours = _decode(k.op_message(FAMILY, 41, op))
    theirs = _decode(_p2_request(op, 41))
    assert ours == theirs


def test_a_batch_is_the_messages_back_to_back() -> None:
    """Many ops in one sendmsg: consecutive messages, each with its own seq."""
    data = b"".join(k.op_message(FAMILY, 10 + i, op) for i, op in enumerate(OPS[:5]))
    seen = [(kind, seq) for kind, seq, _ in k.messages(data)]
    assert seen == [(FAMILY, 10 + i) for i in range(5)]


def _reply(cmd_attr: str, attrs: list[tuple[str, Any]]) -> memoryview:
    msg = p2.ipvsmsg()
    msg["cmd"] = 1
    msg["version"] = 1
    msg["attrs"] = [(cmd_attr, {"attrs": attrs})]
    msg.encode()
    return memoryview(bytes(msg.data))[20:]  # past nlmsghdr + genlmsghdr


STATS64 = [("IPVS_STATS_ATTR_CONNS", 5), ("IPVS_STATS_ATTR_INPKTS", 60), ("IPVS_STATS_ATTR_OUTPKTS", 50),
           ("IPVS_STATS_ATTR_INBYTES", 7_000_000_000), ("IPVS_STATS_ATTR_OUTBYTES", 8000),
           ("IPVS_STATS_ATTR_CPS", 1), ("IPVS_STATS_ATTR_INPPS", 2), ("IPVS_STATS_ATTR_OUTPPS", 3),
           ("IPVS_STATS_ATTR_INBPS", 4), ("IPVS_STATS_ATTR_OUTBPS", 5)]
COUNTED = Stats(connections=5, packets_in=60, packets_out=50, bytes_in=7_000_000_000, bytes_out=8000,
                cps=1, pps_in=2, pps_out=3, bps_in=4, bps_out=5)


@pytest.mark.parametrize("stats_attr", ["IPVS_DEST_ATTR_STATS64", "IPVS_DEST_ATTR_STATS"])
def test_dest_reply_with_counters(stats_attr: str) -> None:
    payload = _reply("IPVS_CMD_ATTR_DEST", [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET), ("IPVS_DEST_ATTR_ADDR", "10.0.0.3"),
        ("IPVS_DEST_ATTR_PORT", 8080), ("IPVS_DEST_ATTR_FWD_METHOD", 0), ("IPVS_DEST_ATTR_WEIGHT", 4),
        ("IPVS_DEST_ATTR_U_THRESH", 100), ("IPVS_DEST_ATTR_L_THRESH", 10),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", 2), ("IPVS_DEST_ATTR_INACT_CONNS", 3), ("IPVS_DEST_ATTR_PERSIST_CONNS", 1),
        (stats_attr, {"attrs": STATS64}),
    ])
    d = k.parse_dest(k.pick(k.DEST_FIELDS, payload), 4)
    assert d == Dest("10.0.0.3", 8080, "nat", 4, 100, 10)
    assert d.stats == COUNTED._replace(active=2, inactive=3, persistent=1)


def test_dest_reply_without_family_takes_the_services() -> None:
    """Kernels before 4.x send no IPVS_DEST_ATTR_ADDR_FAMILY (pyroute2 cannot build that: by hand)."""
    inner = (k._nla(k.DEST_ADDR, socket.inet_pton(socket.AF_INET6, "2001:db8::2")) + k._nla(k.DEST_PORT, b"\1\xbb")
             + k._nla(k.DEST_FWD_METHOD, (2).to_bytes(4, "little")) + k._nla(k.DEST_WEIGHT, (5).to_bytes(4, "little")))
    payload = memoryview(k._nla(k.CMD_ATTR_DEST, inner))
    assert k.parse_dest(k.pick(k.DEST_FIELDS, payload), 6) == Dest("2001:db8::2", 443, "tun", 5)


def test_service_replies() -> None:
    v4 = _reply("IPVS_CMD_ATTR_SERVICE", [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", 17),
        ("IPVS_SVC_ATTR_ADDR", "10.0.0.9"), ("IPVS_SVC_ATTR_PORT", 53), ("IPVS_SVC_ATTR_SCHED_NAME", "sh"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": V4P.kernel_flags | 0x2, "mask": 0xFFFFFFFF}),  # + HASHED
        ("IPVS_SVC_ATTR_TIMEOUT", 300), ("IPVS_SVC_ATTR_NETMASK", "255.255.255.0"),
        ("IPVS_SVC_ATTR_STATS64", {"attrs": STATS64})])
    svc = k.parse_service(k.pick(k.SERVICE_FIELDS, v4))
    assert svc == V4P
    assert svc.stats == COUNTED
    fwm = _reply("IPVS_CMD_ATTR_SERVICE", [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET6), ("IPVS_SVC_ATTR_FWMARK", 7), ("IPVS_SVC_ATTR_SCHED_NAME", "rr"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": 0x2, "mask": 0xFFFFFFFF}), ("IPVS_SVC_ATTR_TIMEOUT", 0),
        ("IPVS_SVC_ATTR_NETMASK", socket.inet_ntoa((128).to_bytes(4, "little")))])
    assert k.parse_service(k.pick(k.SERVICE_FIELDS, fwm)) == FWM


def test_kernel_sized_addresses() -> None:
    """The kernel sends ADDR as a 16-byte union nf_inet_addr even for IPv4."""
    inner = (k._nla(k.DEST_ADDR, socket.inet_aton("10.0.0.2") + bytes(12)) + k._nla(k.DEST_PORT, b"\0P")
             + k._nla(k.DEST_FWD_METHOD, (3).to_bytes(4, "little")) + k._nla(k.DEST_WEIGHT, (1).to_bytes(4, "little")))
    payload = memoryview(k._nla(k.CMD_ATTR_DEST | 0x8000, inner))  # NLA_F_NESTED as the kernel sets it
    assert k.parse_dest(k.pick(k.DEST_FIELDS, payload), 4) == Dest("10.0.0.2", 80)


def test_learned_layout_decodes_like_the_walk() -> None:
    """The fast path (one struct per reply shape) gives the walk's fields, and a reply of
    another shape (an attribute more, a longer name) falls back to the walk."""
    def dest_reply(addr: str, weight: int, extra: list[tuple[str, Any]]) -> memoryview:
        return _reply("IPVS_CMD_ATTR_DEST", [
            ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET), ("IPVS_DEST_ATTR_ADDR", addr),
            ("IPVS_DEST_ATTR_PORT", 80), ("IPVS_DEST_ATTR_FWD_METHOD", 3), ("IPVS_DEST_ATTR_WEIGHT", weight),
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", weight * 2), ("IPVS_DEST_ATTR_STATS64", {"attrs": STATS64}), *extra])

    decoder = k.Decoder(k.DEST_FIELDS)
    first = dest_reply("10.0.0.2", 1, [])
    assert decoder(first) == k.pick(k.DEST_FIELDS, first)
    layout = decoder.layout
    for addr, w in (("10.0.0.3", 5), ("10.9.8.7", 0)):
        same_shape = dest_reply(addr, w, [])
        assert layout is not None and layout.pick(same_shape) == k.pick(k.DEST_FIELDS, same_shape)
        assert k.parse_dest(decoder(same_shape), 4).stats == COUNTED._replace(active=2 * w)
    other = dest_reply("10.0.0.4", 2, [("IPVS_DEST_ATTR_INACT_CONNS", 9)])
    assert layout.pick(other) is None
    assert k.parse_dest(decoder(other), 4).stats.inactive == 9  # type: ignore[union-attr]
    assert decoder.layout is not layout  # learned the new shape
    svc = _reply("IPVS_CMD_ATTR_SERVICE", [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", 6),
                                           ("IPVS_SVC_ATTR_ADDR", "10.0.0.1"), ("IPVS_SVC_ATTR_PORT", 80),
                                           ("IPVS_SVC_ATTR_SCHED_NAME", "wrr")])
    longer = _reply("IPVS_CMD_ATTR_SERVICE", [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", 6),
                                              ("IPVS_SVC_ATTR_ADDR", "10.0.0.1"), ("IPVS_SVC_ATTR_PORT", 80),
                                              ("IPVS_SVC_ATTR_SCHED_NAME", "lblcr")])
    decoder = k.Decoder(k.SERVICE_FIELDS)
    assert k.parse_service(decoder(svc)).scheduler == "wrr"
    assert k.parse_service(decoder(longer)).scheduler == "lblcr"


def test_only_an_acked_message_asks_for_an_ack() -> None:
    """A batch asks for one ack, on its last op; the kernel answers the others only on failure."""
    assert _decode(k.op_message(FAMILY, 1, OPS[0], ack=False))["flags"] == k.NLM_F_REQUEST
    assert _decode(k.op_message(FAMILY, 1, OPS[0]))["flags"] == k.NLM_F_REQUEST | k.NLM_F_ACK
