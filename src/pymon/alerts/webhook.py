"""`webhook`: POST a JSON description of the event to a URL (aiohttp), with retries.

Body (Content-Type: application/json):

    {"type": "alert", "group": "web", "service": "http", "hosts": ["10.0.0.12"],
     "summary": "10.0.0.12", "detail": "...", "time": 1732540000.0,
     "description": "front web farm", "retval": 1}

Params:
    url       http:// or https:// (required; or the first word of argv: `webhook URL`)
    headers   {name: value} added to the request (e.g. Authorization)
    timeout   seconds per attempt (default 10)
    retries   attempts after the first one (default 3); 0 = one attempt only
    backoff   seconds before the first retry (default 1), doubling after each, at most 30
    verify    verify the server certificate for https (default true)

A 2xx answer is success. Connection errors, timeouts, 408, 429 and 5xx are retried;
any other status is final. Retries are bounded twice: by `retries`, and by the alert's
hard timeout (globals.alert_timeout), which cancels whatever attempt is running.
Each retry logs `alert.retry`; the last failure raises, so the daemon logs `alert.failed`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from ..plugin import AlertEvent, Params, alert
from ..probes._common import ParamReader, validator, describe

RETRYABLE = {408, 429}
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class WebhookParams:
    url: str
    headers: dict[str, str]
    timeout: float
    retries: int
    backoff: float
    verify: bool


def parse_url(r: ParamReader) -> str:
    """`url`, or the first argv word (`webhook https://...`)."""
    argv = r.params.get("argv") or []
    if not isinstance(argv, (list, tuple)):
        r.error(f"argv: expected a list of strings, got {argv!r}")
        argv = []
    if len(argv) > 1:
        r.error(f"argv: expected one URL, got {len(argv)} words")
    url = r.string("url", str(argv[0]) if argv else None)
    if url is None:
        r.error("url: required")
        return ""
    if not url.startswith(("http://", "https://")):
        r.error(f"url: must start with http:// or https://, got {url!r}")
    return url


def headers_of(r: ParamReader) -> dict[str, str]:
    raw = r.raw("headers", {})
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                            for k, v in raw.items()):
        r.error(f"headers: expected a mapping of header names to strings, got {raw!r}")
        return {}
    return {k: str(v) for k, v in raw.items()}


def _parse(params: Params) -> WebhookParams:
    r = ParamReader(params)
    cfg = WebhookParams(
        url=parse_url(r), headers=headers_of(r), timeout=r.timeout(10.0),
        retries=r.number("retries", 3, integer=True, lo=0),
        backoff=float(r.number("backoff", 1.0, lo=0)), verify=r.boolean("verify", True),
    )
    r.finish()
    return cfg


validate_webhook_params = validator(_parse)
PARAM_VALIDATORS = {"webhook": validate_webhook_params}


def payload(event: AlertEvent) -> dict[str, Any]:
    return {"type": event.type, "group": event.group, "service": event.service, "hosts": list(event.hosts),
            "summary": event.summary, "detail": event.detail, "time": event.time,
            "description": event.description, "retval": event.retval}


class DeliveryError(RuntimeError):
    pass


async def post_json(url: str, body: Any, *, headers: dict[str, str], timeout: float, retries: int,
                    backoff: float, verify: bool, what: str) -> int:
    """POST `body` as JSON until a 2xx answer; returns the number of attempts it took.
    Raises DeliveryError with the last reason once the attempts are spent."""
    log = structlog.get_logger("pymon")
    data = json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", "User-Agent": "pymon", **headers}
    delay = backoff
    attempt = 0
    connector = aiohttp.TCPConnector(ssl=None if verify else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            attempt += 1
            final = attempt > retries
            try:
                async with session.post(url, data=data, headers=hdrs, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    text = (await resp.content.read(200)).decode("utf-8", "replace")
                    if 200 <= resp.status < 300:
                        return attempt
                    reason = f"HTTP {resp.status}" + (f": {text.strip()[:100]}" if text.strip() else "")
                    if resp.status < 500 and resp.status not in RETRYABLE:
                        final = True
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                reason = describe(e, timeout)
            if final:
                raise DeliveryError(f"{what}: {reason} (attempt {attempt} of {retries + 1})")
            log.warning("alert.retry", alert=what, url=url, attempt=attempt, error=reason,
                        retry_in_s=round(delay, 3))
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF) if delay else 0.0


@alert("webhook")
async def webhook_alert(event: AlertEvent, params: Params) -> None:
    p = _parse(params)
    await post_json(p.url, payload(event), headers=p.headers, timeout=p.timeout, retries=p.retries,
                    backoff=p.backoff, verify=p.verify, what="webhook")
