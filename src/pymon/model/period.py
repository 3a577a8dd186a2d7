"""Time periods with exactly the semantics of Perl's ``Time::Period::inPeriod``.

mon configurations carry period strings such as ``wd {Mon-Fri} hr {9am-5pm}``
and operators rely on Perl's precise (sometimes surprising) interpretation of
them, so this is a literal re-implementation of Time::Period 1.25, quirks
included, rather than a "cleaner" grammar.  See ``tests/unit/test_period.py`` for
the differential test against the real Perl module.

The one deliberate difference: Perl validates lazily, sub-period by sub-period
and only until one matches, so ``hr {0-23}, garbage`` "works" in Perl at every
time while ``garbage, hr {0-23}`` always fails.  We validate the whole spec up
front (a config error should not depend on the time of day); any spec for
which Perl *can* return -1 raises :class:`PeriodError` here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Period", "PeriodError", "parse_period"]


class PeriodError(ValueError):
    """A malformed period spec (Perl's ``inPeriod`` would return -1).

    ``offset`` is the 0-based character offset in the spec where the problem
    is (or 0), so config loaders can point at it.
    """

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


# Perl's \s, \w, \d and lc() act on ASCII only for the byte strings mon reads,
# so every pattern here is ASCII-only and lower-casing touches A-Z only.
_A = re.ASCII
_WS = " \t\n\r\f\v"
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SUBPERIOD_SEP = re.compile(r"\s*,\s*", _A)
_SCALE_SEP = re.compile(r"}\s*", _A)
_SCALE = re.compile(r"([a-z]*)\s*\{\s*(.*)", _A)  # '.' stops at '\n', as in Perl
_JOIN = re.compile(r"(\w+)\s*-\s*(\w+)", _A)  # "a - b" -> "a-b"
_TOKEN = re.compile(r"\S+", _A)
_WORD = re.compile(r"\w", _A)
_DIGITS = re.compile(r"\d+", _A)
_AMPM = re.compile(r"(\d+)(am|pm|noon)", _A)
_PERL_NUM = re.compile(r"\+?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", _A)

_LONG = {"year": "yr", "month": "mo", "week": "wk", "yday": "yd", "mday": "md",
         "wday": "wd", "hour": "hr", "minute": "min", "second": "sec"}
_CODES = ("yr", "mo", "wk", "yd", "md", "wd", "hr", "min", "sec")  # field order
_SCALE_HELP = "year/yr, month/mo, week/wk, yday/yd, mday/md, wday/wd, hour/hr, minute/min, second/sec"
# code -> (amount subtracted from a number, min, max after subtracting, what is accepted)
_NUMERIC: dict[str, tuple[int, int, int, str]] = {
    "mo": (1, 0, 11, "1-12 or jan..dec"),
    "wk": (1, 0, 5, "1-6"),
    "yd": (1, 0, 365, "1-366"),
    "md": (0, 1, 31, "1-31"),
    "wd": (1, 0, 6, "1-7 (1=Sunday) or su..sa"),
    "hr": (0, 0, 23, "0-23, 12am-11am, 12noon, 12pm-11pm"),
    "min": (0, 0, 59, "0-59"),
    "sec": (0, 0, 59, "0-59"),
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NAMES: dict[str, dict[str, int]] = {  # only the first 3 (months) / 2 (week days) letters count
    "mo": {m: i for i, m in enumerate(_MONTHS)},
    "wd": {d: i for i, d in enumerate(("su", "mo", "tu", "we", "th", "fr", "sa"))},
}
_ALL = (1 << 512) - 1  # wrap-around ranges are "v >= lo or v <= hi", open-ended like Perl's


class _Sub(NamedTuple):
    """One compiled sub-period: every (field index, bitmask) must match, and the years."""

    masks: tuple[tuple[int, int], ...]
    years: tuple[tuple[int, int], ...] | None  # raw (v1, v2); 2-digit years depend on "now"


def _split(pattern: re.Pattern[str], s: str, base: int) -> list[tuple[int, str]]:
    """Perl ``split`` (trailing empty fields dropped), keeping each field's offset."""
    out, pos = [], 0
    for m in pattern.finditer(s):
        out.append((base + pos, s[pos:m.start()]))
        pos = m.end()
    out.append((base + pos, s[pos:]))
    while out and not out[-1][1]:
        out.pop()
    return out


def _tokens(data: str, base: int) -> list[tuple[int, str]]:
    """Perl's ``s/(\\w+)\\s*-\\s*(\\w+)/$1-$2/g`` then ``split /\\s+/``, keeping offsets."""
    chars: list[str] = []
    where: list[int] = []
    last = 0
    for m in _JOIN.finditer(data):
        chars += data[last:m.end(1)]
        where += range(last, m.end(1))
        chars.append("-")
        where.append(data.index("-", m.end(1)))
        last = m.start(2)
    chars += data[last:]
    where += range(last, len(data))
    joined = "".join(chars)
    return [(base + where[m.start()], m.group()) for m in _TOKEN.finditer(joined)]


def _side(code: str, v: str, at: int) -> int:
    """One value of a range (``v`` or either side of ``v-v``) as Perl's scale subs read it."""
    shift, lo, hi, accepted = _NUMERIC[code]
    bad = PeriodError(f"bad {_name(code)} value {v!r} (expected {accepted})", at)
    if code == "hr" and (m := _AMPM.fullmatch(v)):
        n, suffix = int(m.group(1)), m.group(2)
        if suffix == "noon" and n != 12:
            raise bad
        # Perl does no range check before converting: 13am is 13, 0pm is 12, 0am is 0.
        if suffix == "am" and n == 12:
            n = 0
        elif suffix == "pm" and n != 12:
            n += 12
        v = str(n)
    names = _NAMES.get(code)
    if names is not None and re.search("[a-z]", v):
        n = names.get(v[: 3 if code == "mo" else 2], -1)  # "January", "Thursday", even "Satan"
    elif _DIGITS.fullmatch(v):
        n = int(v) - shift
    else:
        raise bad
    if not lo <= n <= hi:
        raise bad
    return n


def _yd_single(v: str, at: int) -> float:
    """Perl's ``yd`` decrements *before* checking for digits, so "5abc", "+5", "5.0" and
    ".5e1" all mean day 5 (Perl numifies the string).  A result whose ``%.15g``
    form is all digits but is not an integer is valid yet never equal to a day."""
    m = _PERL_NUM.match(v)
    n = (float(m.group()) if m else 0.0) - 1
    if not (re.fullmatch(r"\d+", format(n, ".15g"), _A) and 0 <= n <= 365):
        raise PeriodError(f"bad yday value {v!r} (expected 1-366)", at)
    return n


def _name(code: str) -> str:
    return next(k for k, c in _LONG.items() if c == code)


def _year(v: str, at: int) -> int:
    if not _DIGITS.fullmatch(v) or 99 < int(v) < 1970:
        raise PeriodError(f"bad year value {v!r} (expected 0-99 or >= 1970)", at)
    return int(v)


def _compile_sub(text: str, base: int) -> _Sub:
    """Validate one sub-period exactly as inPeriod does (all of it, no short-cut)."""
    lb, rb = text.count("{"), text.count("}")
    if lb != rb:
        raise PeriodError(f"unbalanced braces in {text!r}: {lb} '{{' but {rb} '}}'", base)
    if lb == 0:
        what = repr(text) if text else "empty sub-period (stray ',')"
        raise PeriodError(f"{what}: expected 'scale {{range ...}}'", base)
    scales = _split(_SCALE_SEP, text, base)
    if len(scales) != lb:
        raise PeriodError(f"text outside 'scale {{...}}' blocks in {text!r}", base)
    masks: dict[int, int] = {}
    years: list[tuple[int, int]] | None = None
    for at, piece in scales:
        m = _SCALE.match(piece)
        if m is None:
            raise PeriodError(f"expected 'scale {{' at {piece!r}", at)
        scale = m.group(1)
        code = _LONG.get(scale) if len(scale) > 3 else scale if scale in _CODES else None
        if code is None:
            raise PeriodError(f"unknown scale {scale!r} (use one of {_SCALE_HELP})", at)
        field_no = _CODES.index(code)
        if code == "yr":
            years = years or []
        else:
            masks.setdefault(field_no, 0)
        for tat, tok in _tokens(m.group(2), at + m.start(2)):
            lo_s, dash, hi_s = tok.rpartition("-")  # Perl's greedy /(.*)-(.*)/
            if not dash:
                lo_s = hi_s
            if not (_WORD.search(lo_s) and _WORD.search(hi_s)):
                raise PeriodError(f"bad {_name(code)} range {tok!r}", tat)
            if code == "yr":
                assert years is not None
                years.append((_year(lo_s, tat), _year(hi_s, tat)))
                continue
            if code == "yd" and not dash:
                n = _yd_single(tok, tat)
                bits = 1 << int(n) if n == int(n) else 0
            else:
                lo, hi = _side(code, lo_s, tat), _side(code, hi_s, tat)
                if lo <= hi:
                    bits = (1 << (hi + 1)) - (1 << lo)
                else:  # wraps around, e.g. wd {Fri-Mon}, hr {10pm-2am}
                    bits = (_ALL ^ ((1 << lo) - 1)) | ((1 << (hi + 1)) - 1)
            masks[field_no] |= bits
    return _Sub(tuple(masks.items()), None if years is None else tuple(years))


def _compile(spec: str) -> tuple[_Sub, ...] | None:
    """Compile a spec; ``None`` means "always" (blank spec), ``()`` means never."""
    period = spec.lstrip(_WS)
    base = len(spec) - len(period)
    period = period.rstrip(_WS).translate(_LOWER)
    if not period:
        return None
    if period == "none":
        return ()
    # Note Perl drops trailing empty fields: "hr {1}," is fine and "," never matches.
    return tuple(_compile_sub(text, at) for at, text in _split(_SUBPERIOD_SEP, period, base))


def _week(mday: int, wday: int) -> int:
    """Time::Period's week of the month, 0-based: +1 at every Sunday after the 1st."""
    first = (wday - mday + 1) % 7  # weekday of the 1st, 0 = Sunday
    sunday = 1 + ((7 - first) % 7 or 7)  # first Sunday on day 2 or later
    return 0 if mday < sunday else (mday - sunday) // 7 + 1


def _in_years(years: tuple[tuple[int, int], ...], year: int) -> bool:
    century = 100 * int(str(year)[:2])  # Perl: 100 * substr($yr, 0, 2)
    for v1, v2 in years:
        lo, hi = (v if v > 99 else century + v for v in (v1, v2))
        if min(lo, hi) <= year <= max(lo, hi):  # years never wrap
            return True
    return False


@dataclass(frozen=True)
class Period:
    """A compiled Time::Period spec; constructing it validates (raises PeriodError)."""

    spec: str
    _subs: tuple[_Sub, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_subs", _compile(self.spec))

    def contains(self, t: float) -> bool:
        """Whether epoch time ``t`` (read in local time, like Perl) is in the period."""
        subs = self._subs
        if subs is None:
            return True
        tm = time.localtime(t)
        wday = (tm.tm_wday + 1) % 7
        vals = (tm.tm_year, tm.tm_mon - 1, _week(tm.tm_mday, wday), tm.tm_yday - 1,
                tm.tm_mday, wday, tm.tm_hour, tm.tm_min, tm.tm_sec)
        for sub in subs:
            if all(mask >> vals[i] & 1 for i, mask in sub.masks) and (
                sub.years is None or _in_years(sub.years, tm.tm_year)
            ):
                return True
        return False


def parse_period(spec: str) -> Period:
    """Compile ``spec``; blank means always, "none" never; raises PeriodError if bad."""
    return Period(spec)
