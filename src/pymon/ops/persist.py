"""What survives a restart: `<statedir>/state.json`.

One JSON file holds the operator's decisions (disabled hosts, services and watches,
with an optional expiry and a reason; acknowledgements with their comment; drained
real servers), the
runtime state of every service (per-host status and counters, mon's failure
counters, the alert-period counters), the alert history and the downtime log.

Written atomically (a temporary file in the same directory, fsync, rename, fsync of
the directory), so a crash or `kill -9` mid-write leaves the old or the new file,
never a torn one. A file that does not parse is moved aside (`state.json.corrupt-TS`)
with a `state.corrupt` warning and the daemon starts clean. A state dir that is
read-only or full costs one `state.write_failed` line (again only after a write has
succeeded in between); the daemon keeps running on its in-memory state.

Pure helpers (`snapshot_service`, `restore_service`) translate to and from
`ServiceState`; `Store` does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Sequence

from pymon.plugin import Result
from pymon.engine.rules import HostState, PeriodState, ServiceState

VERSION = 1
HISTORY_MAX = 1000  # alert history entries kept (mon's `maxkeep` is 100)
DOWNTIME_MAX = 1000  # finished outages kept

Kind = Literal["host", "service", "watch"]
KINDS: tuple[Kind, ...] = ("host", "service", "watch")


@dataclass
class Disabled:
    reason: str = ""
    since: float = 0.0
    until: float | None = None  # None: until enabled
    by: str = ""

    def expired(self, now: float) -> bool:
        return self.until is not None and now >= self.until


@dataclass
class Drain:
    """An operator drain of a real server (`pymon drain`): weight 0 at once, out of the
    pool when idle or at `deadline` (absolute; None: only when idle), until undrained.
    `group` None drains the host in every virtual service that uses it."""

    host: str
    group: str | None = None
    since: float = 0.0
    deadline: float | None = None
    force: bool = False
    reason: str = ""
    by: str = ""

    @property
    def name(self) -> str:
        """The key in state.json and the API: HOST, or GROUP/HOST."""
        return self.host if self.group is None else f"{self.group}/{self.host}"


@dataclass
class Ack:
    comment: str
    time: float
    by: str = ""


@dataclass
class State:
    """Everything in state.json. `services` is the snapshot as loaded, until the daemon
    has restored it; each save writes a fresh one (Control.snapshot)."""

    disabled: dict[Kind, dict[str, Disabled]] = field(default_factory=lambda: {k: {} for k in KINDS})
    acks: dict[str, Ack] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    downtime: list[dict[str, Any]] = field(default_factory=list)
    drains: dict[str, Drain] = field(default_factory=dict)  # by Drain.name

    # -- the operator's decisions ------------------------------------------------

    def is_disabled(self, kind: Kind, name: str, now: float | None = None) -> Disabled | None:
        d = self.disabled[kind].get(name)
        if d is None or (now is not None and d.expired(now)):
            return None
        return d

    def disable(self, kind: Kind, name: str, reason: str, now: float, until: float | None,
                by: str = "") -> Disabled:
        d = self.disabled[kind][name] = Disabled(reason, now, until, by)
        return d

    def enable(self, kind: Kind, name: str) -> bool:
        return self.disabled[kind].pop(name, None) is not None

    def expire(self, now: float) -> list[tuple[Kind, str, Disabled]]:
        gone = [(k, n, d) for k in KINDS for n, d in self.disabled[k].items() if d.expired(now)]
        for k, n, _ in gone:
            del self.disabled[k][n]
        return gone

    def add_history(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        del self.history[:-HISTORY_MAX]

    def add_downtime(self, entry: dict[str, Any]) -> None:
        self.downtime.append(entry)
        del self.downtime[:-DOWNTIME_MAX]

    # -- (de)serialisation ---------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "saved": time.time(),
            "disabled": {k: {n: asdict(d) for n, d in v.items()} for k, v in self.disabled.items()},
            "acks": {k: asdict(a) for k, a in self.acks.items()},
            "drains": {k: asdict(d) for k, d in self.drains.items()},
            "services": self.services,
            "history": self.history,
            "downtime": self.downtime,
        }

    @classmethod
    def from_json(cls, data: Any) -> "State":
        """Strict enough that a file of the wrong shape counts as corrupt (ValueError)."""
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a pymon state file of version {VERSION}")
        try:
            st = cls()
            for k in KINDS:
                for n, d in (data.get("disabled") or {}).get(k, {}).items():
                    st.disabled[k][str(n)] = Disabled(str(d.get("reason", "")), float(d.get("since", 0)),
                                                      None if d.get("until") is None else float(d["until"]),
                                                      str(d.get("by", "")))
            for n, a in (data.get("acks") or {}).items():
                st.acks[str(n)] = Ack(str(a["comment"]), float(a.get("time", 0)), str(a.get("by", "")))
            for d in (data.get("drains") or {}).values():
                dr = Drain(str(d["host"]), None if d.get("group") is None else str(d["group"]),
                           float(d.get("since", 0)), None if d.get("deadline") is None else float(d["deadline"]),
                           bool(d.get("force", False)), str(d.get("reason", "")), str(d.get("by", "")))
                st.drains[dr.name] = dr
            services = data.get("services") or {}
            history = data.get("history") or []
            downtime = data.get("downtime") or []
            if not (isinstance(services, dict) and isinstance(history, list) and isinstance(downtime, list)):
                raise ValueError("services, history or downtime of the wrong type")
            st.services, st.history, st.downtime = services, history[-HISTORY_MAX:], downtime[-DOWNTIME_MAX:]
        except (AttributeError, KeyError, TypeError) as e:
            raise ValueError(f"malformed state: {type(e).__name__}: {e}") from None
        return st


def move_aside(path: Path) -> str | None:
    """Rename a state file that does not parse to NAME.corrupt-TIMESTAMP beside it, so the
    daemon starts clean without losing it for a post-mortem (and the next save cannot
    overwrite it); the new name, or None when it could not be moved."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return str(aside)


def service_key(key: tuple[str, str]) -> str:
    return f"{key[0]}:{key[1]}"


_SVC_FIELDS = ("status", "consec_failures", "failure_count", "first_failure", "last_failure", "last_success",
               "last_check", "last_summary", "last_detail", "last_output", "failure_output", "acked")
_HOST_FIELDS = ("up", "consec_fail", "consec_ok", "since", "last_check")
_PERIOD_FIELDS = ("last_alert", "alert_sent", "first_fail_time", "fail_count", "no_comp_upalert_sent")
_SEP = (",", ":")


def _result(r: Result | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"ok": r.ok, "summary": r.summary, "detail": r.detail[-2000:], "latency_s": r.latency_s}


def _unresult(d: Any) -> Result | None:
    if not isinstance(d, dict):
        return None
    return Result(bool(d.get("ok")), str(d.get("summary", "")), str(d.get("detail", "")),
                  float(d.get("latency_s", 0.0)))


def snapshot_service(st: ServiceState) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(st, f) for f in _SVC_FIELDS}
    out["periods"] = [dict({f: getattr(ps, f) for f in _PERIOD_FIELDS}, label=spec.label)
                      for spec, ps in zip(st.spec.periods, st.periods)]
    out["hosts"] = {h: dict({f: getattr(hs, f) for f in _HOST_FIELDS}, last=_result(hs.last),
                            last_bad=_result(hs.last_bad))
                    for h, hs in st.hosts.items()}
    return out


def services_json(items: Sequence[tuple[tuple[str, str], ServiceState]]) -> bytes:
    """Some services' snapshots as the members of a JSON object, for `encode`."""
    return json.dumps({service_key(k): snapshot_service(st) for k, st in items}, separators=_SEP)[1:-1].encode()


def encode(data: dict[str, Any]) -> list[bytes]:
    """A whole file's content at once (`Store.save`)."""
    return [json.dumps(data, separators=_SEP).encode()]


async def stream(data: dict[str, Any], services: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The file's content as parts to write one after another (`Store.save_stream`).
    `services` (parts from `services_json`) stand in for data["services"]: a daemon builds
    them a slice of services per loop pass (10,000 at once held its loop 0.4 s), and
    each part is written before the next is built: holding them all until the write
    (8 MiB at 10,000 services) raised the daemon's peak RSS by that much at every save,
    and as one joined block it raised glibc's mmap threshold so that it stayed in the heap."""
    rest = json.dumps({k: v for k, v in data.items() if k != "services"}, separators=_SEP).encode()
    yield b'{"services":{'
    sep = b""
    async for piece in services:
        if piece:
            yield sep + piece
            sep = b","
    yield (b"}," if len(rest) > 2 else b"}") + rest[1:]


def restore_service(st: ServiceState, snap: dict[str, Any], hosts: list[str]) -> None:
    """Put a snapshot back into a fresh ServiceState. Hosts no longer in the group are
    dropped; period counters come back only where the period labels still match."""
    for f in _SVC_FIELDS:
        if f in snap:
            setattr(st, f, snap[f])
    if st.status not in ("untested", "ok", "fail"):
        st.status = "untested"
    by_label = {p.get("label"): p for p in snap.get("periods") or [] if isinstance(p, dict)}
    for spec, ps in zip(st.spec.periods, st.periods):
        saved = by_label.get(spec.label)
        if saved:
            for f in _PERIOD_FIELDS:
                if f in saved:
                    setattr(ps, f, type(getattr(PeriodState(), f))(saved[f]))
    for h, d in (snap.get("hosts") or {}).items():
        if h not in hosts or not isinstance(d, dict):
            continue
        hs = st.hosts[h] = HostState()
        for f in _HOST_FIELDS:
            if f in d:
                setattr(hs, f, d[f])
        hs.last, hs.last_bad = _unresult(d.get("last")), _unresult(d.get("last_bad"))
    if st.status == "fail" and not st.failing_hosts:
        st.status = "untested"  # failing hosts are gone from the config: decide afresh
    if st.status == "fail":  # the outage goes on: its upalert's MON_* describe it, as without a restart
        try:
            st.mon.update(MON_FIRST_FAILURE=str(int(st.first_failure)), MON_LAST_FAILURE=str(int(st.last_failure)),
                          MON_LAST_SUCCESS=str(int(st.last_success)), MON_LAST_OUTPUT=str(st.last_output),
                          MON_LAST_SUMMARY=str(st.last_summary))
        except (TypeError, ValueError):
            pass  # a hand-edited state file: mon's fresh values


class Store:
    """The file and its I/O; never raises on a write."""

    def __init__(self, statedir: Path, log: Any, name: str = "state.json"):
        self.dir = Path(statedir)
        self.path = self.dir / name
        self.log = log
        self.write_ok = True  # False after a failed write: log the next failure only after a success

    def load(self) -> State:
        for stale in self.dir.glob(f".{self.path.name}.tmp*"):
            try:
                stale.unlink()  # left by a crash mid-write; the rename never happened
            except OSError:
                pass
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as e:
            self.log.warning("state.unreadable", file=str(self.path), error=str(e), action="starting clean")
            return State()
        try:
            return State.from_json(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
            moved = move_aside(self.path)
            self.log.warning("state.corrupt", file=str(self.path), error=f"{type(e).__name__}: {e}"[:300], moved_to=moved,
                             action="starting clean")
            return State()

    def save(self, parts: Sequence[bytes]) -> bool:
        """Atomic replace of the file by `parts` (from `encode`). Blocking (fsync): call
        from a thread."""
        tmp = self._tmp()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for part in parts:
                    _write(fd, part)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._replace(tmp)
        except OSError as e:
            return self._failed(tmp, e)
        return self._saved()

    async def save_stream(self, parts: AsyncIterator[bytes]) -> bool:
        """`save` of parts as they are made (`stream`): each is written when it comes, so
        only one is in memory. Every write, the fsyncs and the rename run in a thread: a
        write to a disk behind on its writeback can block."""
        tmp = self._tmp()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                async for part in parts:
                    await asyncio.to_thread(_write, fd, part)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            await asyncio.to_thread(self._replace, tmp)
        except OSError as e:
            return self._failed(tmp, e)
        return self._saved()

    def _tmp(self) -> Path:
        return self.dir / f".{self.path.name}.tmp{os.getpid()}"

    def _replace(self, tmp: Path) -> None:
        """Rename into place and fsync the directory: a crash leaves the old file or the new one."""
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _failed(self, tmp: Path, e: OSError) -> bool:
        try:
            tmp.unlink()
        except OSError:
            pass
        if self.write_ok:
            self.log.error("state.write_failed", file=str(self.path), error=str(e),
                           action="keeps running; state changes are kept in memory only")
        self.write_ok = False
        return False

    def _saved(self) -> bool:
        if not self.write_ok:
            self.log.info("state.write_recovered", file=str(self.path))
        self.write_ok = True
        return True


def _write(fd: int, part: bytes) -> None:
    view = memoryview(part)
    while view:
        view = view[os.write(fd, view):]
