"""Reading and answering the control API's requests: the JSON (or form) body, an error
answer, and who asked. Shared by the API's handlers and the routes other ops modules add."""

from __future__ import annotations

import json
import pwd
import socket
import struct
from typing import Any

from aiohttp import web


def err(status: int, msg: str) -> web.Response:
    return web.json_response({"error": msg}, status=status)


def peer(request: web.Request) -> str:
    """Who asked, for the audit trail: the unix peer's user, or the TCP peer."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
            try:
                return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
            except KeyError:
                return f"uid {uid}"
        except OSError:
            return "unix socket"
    return f"web {request.remote}"


async def body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    ctype = request.content_type
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return dict(await form(request))
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json")
    except RecursionError:  # nested deeper than the parser's stack
        raise web.HTTPBadRequest(text='{"error": "body must be JSON nested less deeply"}',
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
    return data


async def form(request: web.Request) -> Any:
    """request.post(), with a malformed form (multipart without a boundary...) a 400."""
    try:
        return await request.post()
    except ValueError as e:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"bad form body: {e}"}),
                                 content_type="application/json") from None
