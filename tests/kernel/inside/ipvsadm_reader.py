"""The independent reader: shell helpers around `ipvsadm` for the in-VM tests."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymon.ipvs.table import Table


def sh(cmd: str, check: bool = True) -> str:
    """Run a shell command; return stdout (stderr folded in on failure)."""
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout


def ipvsadm_services(ns: str | None = None) -> list[str]:
    """`ipvsadm -Ln` (in network namespace `ns` if given) without its three header lines,
    trailing blanks stripped."""
    lines = sh(f"ip netns exec {ns} ipvsadm -Ln" if ns else "ipvsadm -Ln").splitlines()
    assert lines[0].startswith("IP Virtual Server version"), lines
    return [line.rstrip() for line in lines[3:]]


def ipvsadm_blocks(ns: str | None = None) -> dict[str, list[str]]:
    """`ipvsadm -Ln` as {service line: [its real server lines]}, order-free."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in ipvsadm_services(ns):
        if line.startswith("  ->"):
            current.append(line)
        else:
            current = blocks.setdefault(line, [])
    return blocks


def vip_block(vip: str, port: int = 80, ns: str | None = None) -> tuple[str, dict[str, list[str]]]:
    """(service line, {real server address: [forward, weight, active, inactive]}) of the
    service at vip:port in `ipvsadm -Ln`; ("", {}) when there is none."""
    for line, dests in ipvsadm_blocks(ns).items():
        if line.split()[1:2] == [f"{vip}:{port}"]:
            return line, {f[1].rsplit(":", 1)[0]: f[2:] for f in (d.split() for d in dests)}
    return "", {}


def vip_weights(vip: str, port: int = 80, ns: str | None = None) -> dict[str, str]:
    """{real server address: weight} of the service at vip:port in `ipvsadm -Ln`."""
    return {addr: cols[1] for addr, cols in vip_block(vip, port, ns)[1].items()}


def ipvsadm_saved() -> "Table":
    """`ipvsadm -Sn` parsed into the model (the rules ipvsadm -R would restore).

    Knows the options ipvsadm -S writes for what pymon sets: -t/-u/--sctp-service/-f,
    -s, -p, -M, -o, -r, -g/-m/-i, -w (it writes no thresholds).
    """
    from pymon.ipvs.table import Dest, Service, ServiceKey, Table, make_table
    from pymon.model.config import split_hostport

    entries: dict[ServiceKey, tuple[Service, list[Dest]]] = {}
    for line in sh("ipvsadm -Sn").splitlines():
        words = line.split()
        if not words:
            continue
        opts: dict[str, str] = {}
        i = 1
        while i < len(words):
            if words[i] in ("-g", "-m", "-i", "-o"):
                opts[words[i]] = ""
                i += 1
            else:
                opts[words[i]] = words[i + 1]
                i += 2
        if "-f" in opts:
            key = ServiceKey(fwmark=int(opts["-f"]), family=6 if "-6" in words else 4)
        else:
            flag = next(f for f in ("-t", "-u", "--sctp-service") if f in opts)
            addr, port = split_hostport(opts[flag], None)
            key = ServiceKey({"-t": "tcp", "-u": "udp"}.get(flag, "sctp"), addr, port)  # type: ignore[arg-type]
        if words[0] == "-A":
            mask = opts.get("-M")
            netmask = None
            if mask:
                netmask = int(mask) if key.family == 6 else bin(int.from_bytes(bytes(map(int, mask.split("."))), "big")).count("1")
            svc = Service(key, opts.get("-s", "wlc"), int(opts.get("-p", 0)), netmask, 0x4 if "-o" in opts else 0)
            entries[key] = (svc, [])
        elif words[0] == "-a":
            addr, port = split_hostport(opts["-r"], None)
            fwd = "nat" if "-m" in opts else "tun" if "-i" in opts else "dr"
            entries[key][1].append(Dest(addr, port, fwd, int(opts.get("-w", 1))))  # type: ignore[arg-type]
    table: Table = make_table(entries.values())
    return table
