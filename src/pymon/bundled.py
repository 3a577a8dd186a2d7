"""Files shipped with pymon besides the code: etc/ (the demo and director configs), systemd/
(unit and sysusers), monitors/ and alerts/ (example drop-ins).

In a wheel they are package data under pymon/data/ (pyproject.toml maps the top-level
directories there); in a source checkout they are the checkout's own top-level dirs.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
ROOTS = (_PKG / "data", _PKG.parents[1])  # installed, then source checkout (src/pymon -> top)


def find(*parts: str) -> Path | None:
    """The shipped file or directory `parts` (e.g. "etc", "pymon.yaml"), or None."""
    for root in ROOTS:
        p = root.joinpath(*parts)
        if p.exists():
            return p
    return None
