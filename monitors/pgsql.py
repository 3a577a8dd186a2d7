"""`pgsql`: a PostgreSQL probe, shipped as a working example of a drop-in monitor.

TEMPLATE: copy this file next to your config's `mondir` (any `*.py` there is loaded at
start and on SIGHUP), rename the monitor, and change `check()`. What makes a probe:

- `@monitor("name")` on an `async def probe(target, params) -> Result`, called once
  per host of the group, all hosts concurrently (`scope="group"` gets every target
  at once and returns `{host: Result}`);
- it never raises and never blocks the event loop: use an asyncio driver (here
  asyncpg) and `await` everything; anything slow and synchronous goes through
  `asyncio.to_thread`. A blocking probe is named in a `loop.blocked` warning;
- the daemon enforces the service's `timeout` (a hung probe is one failed check),
  and passes it as `params["timeout"]` so the probe can bound its own I/O first and
  say what it was waiting for;
- `PARAM_VALIDATORS = {"name": fn(params) -> [problem, ...]}` makes bad params a config error
  at load time (`pymon check-config`), with the config file's line;
- `Result(ok, summary, detail)`: `summary` is one short line (it becomes mon's
  summary and the alert subject), `detail` anything longer.

Needs asyncpg (`pip install 'pymon[pgsql]'`); without it the monitor still loads, and
a config that uses it is refused with that hint.

Config:

    monitor: {name: pgsql, user: monitor, password_file: /etc/pymon/pg.pw,
              database: app, query: "SELECT count(*) FROM pg_stat_replication",
              expect: "^[1-9]"}

Params:
    port           5432
    user           role to log in as (default postgres)
    password       or password_file (first line; read at each check)
    database       default: the user name
    query          SQL run after connecting (default SELECT 1); read-only please:
                   it runs inside a READ ONLY transaction
    expect         regex searched in the first column of the first row, as text
                   (default: "^1$" for the default query; otherwise any answer is ok)
    ssl            disable, prefer (default), require, verify-ca or verify-full
    timeout        seconds for connect + query (default: the service's timeout)
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from pymon.plugin import Result, Target, monitor

try:
    import asyncpg
except ImportError:  # loads anyway; PARAM_VALIDATORS refuses configs that use it
    asyncpg = None

DEFAULT_QUERY = "SELECT 1"
SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
KNOWN = {"port", "user", "password", "password_file", "database", "query", "expect", "ssl", "timeout"}


def check(params: dict[str, Any]) -> list[str]:
    """Every problem in `params`, one line each; [] when valid."""
    problems = []
    if asyncpg is None:
        problems.append("needs the asyncpg package: pip install 'pymon[pgsql]'")
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        problems.append(f"unknown param{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    port = params.get("port", 5432)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(f"port: not a TCP port: {port!r}")
    for key in ("user", "password", "password_file", "database", "query", "expect"):
        if key in params and not isinstance(params[key], str):
            problems.append(f"{key}: expected a string, got {params[key]!r}")
    if "password" in params and "password_file" in params:
        problems.append("password and password_file: give one")
    if isinstance(params.get("expect"), str):
        try:
            re.compile(params["expect"])
        except re.error as e:
            problems.append(f"expect: bad regex {params['expect']!r}: {e}")
    if params.get("ssl", "prefer") not in SSL_MODES:
        problems.append(f"ssl: must be one of {', '.join(SSL_MODES)}, got {params.get('ssl')!r}")
    timeout = params.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        problems.append(f"timeout: expected a number > 0, got {timeout!r}")
    return problems


PARAM_VALIDATORS = {"pgsql": check}


def _why(e: BaseException, timeout: float) -> str:
    """One line a person on call understands."""
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return f"timeout after {timeout:g}s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if asyncpg is not None and isinstance(e, (asyncpg.InvalidPasswordError,
                                              asyncpg.InvalidAuthorizationSpecificationError)):
        return f"login refused: {e}"
    if asyncpg is not None and isinstance(e, asyncpg.PostgresError):
        return f"query failed: {getattr(e, 'sqlstate', '?')} {e}".strip()
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return f"{type(e).__name__}: {e}"


@monitor("pgsql")
async def pgsql(target: Target, params: dict[str, Any]) -> Result:
    problems = check(params)
    if problems:
        return Result(False, "bad params: " + "; ".join(problems))
    timeout = float(params.get("timeout", 10))
    query = params.get("query", DEFAULT_QUERY)
    expect = params.get("expect", "^1$" if query == DEFAULT_QUERY else None)
    user = params.get("user", "postgres")
    start = time.monotonic()
    conn = None
    try:
        password = params.get("password")
        if "password_file" in params:
            text = await asyncio.to_thread(Path(params["password_file"]).read_text)
            password = text.splitlines()[0] if text else ""
        conn = await asyncpg.connect(host=target.host, port=params.get("port", 5432), user=user,
                                     password=password, database=params.get("database", user),
                                     ssl=params.get("ssl", "prefer"), timeout=timeout)
        left = max(0.001, timeout - (time.monotonic() - start))
        async with conn.transaction(readonly=True):
            row = await conn.fetchrow(query, timeout=left)
    except Exception as e:  # noqa: BLE001 - a probe returns its failure, never raises
        return Result(False, _why(e, timeout), latency_s=time.monotonic() - start)
    finally:
        if conn is not None:
            conn.terminate()
    latency = time.monotonic() - start
    value = None if row is None or len(row) == 0 else row[0]
    shown = "no rows" if row is None else repr(value) if not isinstance(value, str) else value
    if expect is not None and (value is None or not re.search(expect, str(value))):
        return Result(False, f"unexpected result {shown[:100]!s} (expected /{expect}/)",
                      detail=f"query: {query}", latency_s=latency)
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return Result(True, f"ok: {shown[:100]}", latency_s=latency, value=number)
