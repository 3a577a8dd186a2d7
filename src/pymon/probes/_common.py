"""Helpers shared by the built-in probes: param reading and one-line failure summaries.

Params come from YAML, so they are loosely typed; `ParamReader` collects every problem
instead of stopping at the first, so `pymon check` can report a whole config at once.
Probes never raise, so `describe()` turns any exception into the short reason mon users
expect in a summary line ("connection refused", "timeout after 2s").
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
from typing import Any, Callable, TypeVar

from pymon.plugin import Params, Result

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
_TRUE = {"yes", "on", "true", "1"}
_FALSE = {"no", "off", "false", "0"}


class ParamError(ValueError):
    """Every problem found in one probe's params; str() joins them with '; '."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class ParamReader:
    """Typed access to a params dict that records errors and unknown keys."""

    def __init__(self, params: Params, base: Params | None = None, argv: bool = True) -> None:
        """`base`: params derived from mon's argv, overridden by explicit keys; `argv`:
        whether this probe understands an `argv` key (else it is reported as unknown)."""
        if not isinstance(params, dict):
            raise ParamError([f"params must be a mapping, not {type(params).__name__}"])
        self.params: Params = {**(base or {}), **params}
        self.errors: list[str] = []
        self._used: set[str] = {"argv"} if argv else set()

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def has(self, key: str) -> bool:
        return self.params.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        self._used.add(key)
        value = self.params.get(key)
        return default if value is None else value

    def number(self, key: str, default: float | None, *, lo: float | None = None,
               integer: bool = False, positive: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.error(f"{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
            return default
        if positive and value <= 0:
            self.error(f"{key}: must be > 0, got {value!r}")
            return default
        if lo is not None and value < lo:
            self.error(f"{key}: must be >= {lo:g}, got {value!r}")
            return default
        return value

    def port(self, key: str, default: int | None) -> int | None:
        value = self.number(key, default, integer=True)
        if value is not None and not 0 < value < 65536:
            self.error(f"{key}: not a TCP/UDP port: {value}")
            return default
        return value

    def timeout(self, default: float = DEFAULT_TIMEOUT) -> float:
        return float(self.number("timeout", default, positive=True))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        self.error(f"{key}: expected true or false, got {value!r}")
        return default

    def string(self, key: str, default: str | None, choices: tuple[str, ...] | None = None,
               upper: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.error(f"{key}: expected a string, got {value!r}")
            return default
        if upper:
            value = value.upper()
        if choices:
            if value not in choices:
                self.error(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
                return default
            return choices[choices.index(value)]  # the one string, not a copy per params
        return value

    def regex(self, key: str, default: str | None = None) -> re.Pattern[str] | None:
        value = self.string(key, default)
        return compile_regex(key, value, self.errors) if value is not None else None

    def finish(self) -> None:
        """Raise ParamError for unknown keys (typos) and anything recorded so far."""
        unknown = sorted(set(self.params) - self._used)
        if "argv" in unknown:
            self.error("argv: this probe takes no mon-style options; give params instead")
            unknown.remove("argv")
        if unknown:
            self.error(f"unknown param{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if self.errors:
            raise ParamError(self.errors)


def compile_regex(key: str, pattern: str, errors: list[str]) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error as e:
        errors.append(f"{key}: bad regex {pattern!r}: {e}")
        return None


def validator(parse: Callable[[Params], Any]) -> Callable[[Params], list[str]]:
    """Turn a module's `_parse` into the `validate_params(params) -> list[str]` contract."""

    def validate(params: Params) -> list[str]:
        try:
            parse(params)
        except ParamError as e:
            return list(e.errors)
        except ValueError as e:
            return [str(e)]
        return []

    validate.__doc__ = f"Errors in params for {parse.__module__}; empty when valid."
    return validate


def bad_params(e: ValueError) -> Result:
    return Result(ok=False, summary=f"bad params: {e}")


def fmt_s(seconds: float) -> str:
    return f"{seconds:g}s"


def http_timeout_summary(timeout: float, phase: str, received: int) -> str:
    """Which step an HTTP check was in when its time ran out (connect, tls, response,
    body), in the words both http paths use."""
    t = f"timeout after {fmt_s(timeout)}"
    if phase == "connect":
        return f"{t} connecting"
    if phase == "tls":
        return f"{t} in TLS handshake"
    if phase == "body":
        return f"{t} reading body ({received} bytes received)"
    if received:
        return f"{t} receiving response headers ({received} bytes received)"
    return f"{t} waiting for a response (connected, request sent)"


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timed out",
    errno.EPIPE: "connection closed",
    errno.EADDRNOTAVAIL: "address not available",
}


def describe(exc: BaseException, timeout: float | None = None, host: str = "") -> str:
    """One-line reason for a failed check, as mon users know them."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not (
        isinstance(exc, OSError) and exc.errno
    ):
        return f"timeout after {fmt_s(timeout)}" if timeout else "timeout"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}" if host else f"cannot resolve: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TEXT:
        return _ERRNO_TEXT[exc.errno]
    if isinstance(exc, OSError) and exc.strerror:
        return first_line(exc.strerror.lower())
    text = first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def parse_opts(argv: Any, spec: dict[str, str], prog: str, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """getopt for mon's monitor command lines: `spec` maps '-x' (taking a value) to a
    param name; each of `flags` ('-o') takes no value and maps to True under its own name."""
    import getopt

    if not isinstance(argv, (list, tuple)) or not all(isinstance(a, (str, int, float)) for a in argv):
        raise ParamError([f"argv: expected a list of strings, got {argv!r}"])
    shortopts = "".join(f"{opt[1]}:" for opt in spec) + "".join(f[1] for f in flags)
    try:
        opts, rest = getopt.getopt([str(a) for a in argv], shortopts)
    except getopt.GetoptError as e:
        raise ParamError([f"argv: {prog}: {e}"]) from None
    if rest:
        raise ParamError([f"argv: {prog}: unexpected argument {rest[0]!r} (hosts come from the group)"])
    return {spec.get(o, o): (v if o in spec else True) for o, v in opts}


def perl_regex(text: str) -> str:
    """mon's '/ogin:/i' regex arguments as a Python pattern ('(?i)ogin:')."""
    import re as _re

    m = _re.fullmatch(r"/(.*)/([imsx]*)", text, _re.S)
    if not m:
        return text
    return (f"(?{m[2]})" if m[2] else "") + m[1]
