"""Network namespace building blocks of the in-VM topologies (`ip` through sh), and the
busybox HTTP servers in them (a Python server takes tens of seconds to start under TCG)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from ipvsadm_reader import sh


def bridged_netns(ns: str, addr: str, bridge: str = "br0") -> None:
    """Namespace `ns` with eth0 = addr/24, its peer v<ns> a port of `bridge`."""
    sh(f"ip netns add {ns} && ip link add v{ns} type veth peer name eth0 netns {ns} "
       f"&& ip link set v{ns} master {bridge} up && ip -n {ns} addr add {addr}/24 dev eth0 "
       f"&& ip -n {ns} link set eth0 up && ip -n {ns} link set lo up")


def routed_netns(ns: str, host_ip: str, ns_ip: str, dev: str) -> None:
    """Namespace `ns` with eth0 = ns_ip/24, its peer `dev` = host_ip/24 in this namespace,
    which is its default gateway."""
    sh(f"ip netns add {ns} && ip link add {dev} type veth peer name eth0 netns {ns}")
    sh(f"ip addr add {host_ip}/24 dev {dev} && ip link set {dev} up")
    sh(f"ip -n {ns} addr add {ns_ip}/24 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up")
    sh(f"ip -n {ns} route add default via {host_ip}")


def dr_real_server(ns: str, vip: str) -> None:
    """An LVS-DR real server: the VIP local on lo, never answered for in ARP."""
    sh(f"ip -n {ns} addr add {vip}/32 dev lo && ip netns exec {ns} sh -c "
       "'sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 "
       "net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2'")


def start_httpd(ns: str, docroot: Path, body: str, listen: str = "80") -> subprocess.Popen[bytes]:
    """busybox httpd in netns `ns` on `listen` ([addr:]port), serving `body` at /."""
    docroot.mkdir(exist_ok=True)
    (docroot / "index.html").write_text(body)
    return subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", listen, "-h", str(docroot)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def connects(addr: str, port: int = 80) -> bool:
    try:
        socket.create_connection((addr, port), timeout=0.5).close()
        return True
    except OSError:
        return False
