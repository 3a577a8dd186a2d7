"""`chat`: post alerts to a Slack or Mattermost incoming webhook, shipped as a working
example of a drop-in alert.

TEMPLATE: copy this file into your config's `alertdir` (any `*.py` there is loaded at
start and on SIGHUP), rename the alert, and change `text()` or the JSON. What makes an
alert:

- `@alert("name")` on an `async def fn(event, params) -> None`; `event` has `type`
  (alert, upalert, startupalert), `group`, `service`, `hosts` (the failing ones),
  `summary`, `detail`, `time`, `description`, `args` (the words after the name in the
  config: `chat https://...`); `params` are the keys of the config mapping, plus
  `argv` (the same words) when it was given as a string;
- raise on failure: the daemon logs `alert.failed` with the exception's text (and
  `alert.sent` otherwise); it also enforces globals.alert_timeout, so a hung
  endpoint costs one alert, not the daemon;
- be idempotent (an alert may repeat, see alertevery) and never block the loop;
- `PARAM_VALIDATORS = {"name": fn(params) -> [problem, ...]}` turns bad params into config
  errors at load time, with the config file's line.

Config:

    alert: ["chat https://chat.example.com/hooks/xyz"]
    alert: [{name: chat, url: "https://hooks.slack.com/services/T/B/X", channel: "#ops",
             username: pymon, icon_emoji: ":rotating_light:"}]

Params: url (or the first word), channel, username, icon_emoji (added to the JSON when
given), template (str.format fields: alert, type, group, service, hosts, summary,
detail, description, time; default below), timeout (10 s), verify (true).

Posts `{"text": "...", ...}` once; a non-2xx answer raises. (The built-in `webhook`
alert has retries with backoff; this example stays short on purpose.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from pymon.plugin import AlertEvent, alert

ICON = {"alert": ":red_circle:", "upalert": ":large_green_circle:", "startupalert": ":information_source:"}
TEMPLATE = "{icon} *{alert}* {group}/{service}: {summary}{detail_block}"
KNOWN = {"url", "argv", "channel", "username", "icon_emoji", "template", "timeout", "verify"}


def _fields(event: AlertEvent) -> dict[str, Any]:
    detail = event.detail.strip()
    return {
        "icon": ICON.get(event.type, ""), "alert": event.type.upper(), "type": event.type,
        "group": event.group, "service": event.service, "hosts": " ".join(event.hosts),
        "summary": event.summary or "(no summary)", "detail": detail, "description": event.description,
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time)),
        "detail_block": f"\n```\n{detail[:3000]}\n```" if detail else "",
    }


def _url(params: dict[str, Any]) -> Any:
    argv = params.get("argv") or []
    return params.get("url", argv[0] if argv else None)


def check(params: dict[str, Any]) -> list[str]:
    problems = []
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        problems.append(f"unknown param{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if len(params.get("argv") or []) > 1:
        problems.append("argv: expected just the webhook URL")
    url = _url(params)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        problems.append(f"url: an http:// or https:// URL is required, got {url!r}")
    for key in ("channel", "username", "icon_emoji", "template"):
        if key in params and not isinstance(params[key], str):
            problems.append(f"{key}: expected a string, got {params[key]!r}")
    if isinstance(params.get("template"), str):
        sample = AlertEvent("alert", "g", "s", ("h",), "h", "", 0.0)
        try:
            params["template"].format_map(_fields(sample))
        except (KeyError, IndexError, ValueError) as e:
            problems.append(f"template: cannot render: {type(e).__name__}: {e}")
    timeout = params.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        problems.append(f"timeout: expected a number > 0, got {timeout!r}")
    return problems


PARAM_VALIDATORS = {"chat": check}


def message(event: AlertEvent, params: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"text": params.get("template", TEMPLATE).format_map(_fields(event))}
    for key in ("channel", "username", "icon_emoji"):
        if key in params:
            body[key] = params[key]
    return body


@alert("chat")
async def chat(event: AlertEvent, params: dict[str, Any]) -> None:
    problems = check(params)
    if problems:
        raise ValueError("; ".join(problems))
    connector = aiohttp.TCPConnector(ssl=None if params.get("verify", True) else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(_url(params), data=json.dumps(message(event, params)),
                                headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=float(params.get("timeout", 10)))) as resp:
            if not 200 <= resp.status < 300:
                text = (await resp.content.read(200)).decode("utf-8", "replace").strip()
                raise RuntimeError(f"chat webhook answered HTTP {resp.status}" + (f": {text}" if text else ""))
