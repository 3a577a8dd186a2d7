"""The independent reader: shell helpers around `ipvsadm` for the in-VM tests."""

from __future__ import annotations

import subprocess


def sh(cmd: str, check: bool = True) -> str:
    """Run a shell command; return stdout (stderr folded in on failure)."""
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout


def ipvsadm_services() -> list[str]:
    """`ipvsadm -Ln` without its three header lines, trailing blanks stripped."""
    lines = sh("ipvsadm -Ln").splitlines()
    assert lines[0].startswith("IP Virtual Server version"), lines
    return [line.rstrip() for line in lines[3:]]


def ipvsadm_blocks() -> dict[str, list[str]]:
    """`ipvsadm -Ln` as {service line: [its real server lines]}, order-free."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in ipvsadm_services():
        if line.startswith("  ->"):
            current.append(line)
        else:
            current = blocks.setdefault(line, [])
    return blocks
