"""Reading and answering the control API's requests: the JSON (or form) body, an error
answer, and who asked. Shared by the API's handlers and the routes other ops modules add."""

from __future__ import annotations

import json
import pwd
import socket
import struct
from typing import Any, NamedTuple

from aiohttp import web


def err(status: int, msg: str) -> web.Response:
    return web.json_response({"error": msg}, status=status)


# Linux >= 4.13; the socket module does not name it (59: asm-generic, so x86 and arm).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


class PeerCreds(NamedTuple):
    """A unix peer's credentials as the kernel recorded them at connect(): they cannot be
    forged and do not change with what the peer does later (unlike /proc/PID)."""

    uid: int
    gid: int
    groups: frozenset[int]  # supplementary groups


def peer_creds(request: web.Request) -> PeerCreds | None:
    """The unix peer's credentials; None over TCP (or when the kernel will not say)."""
    sock = _unix_sock(request)
    if sock is None:
        return None
    try:
        _, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           struct.calcsize("3i")))
    except OSError:
        return None
    raw = b""
    for size in (64, 65536):  # NGROUPS_MAX is 65536; most peers have a handful
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
            break
        except OSError:  # ERANGE: more groups than the buffer holds; a kernel before 4.13:
            continue  # supplementary groups unknown, the primary group still counts
    groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return PeerCreds(uid, gid, groups)


def peer(request: web.Request) -> str:
    """Who asked, for the audit trail: the unix peer's user, or the TCP peer."""
    creds = peer_creds(request)
    if creds is not None:
        try:
            return f"{pwd.getpwuid(creds.uid).pw_name} (uid {creds.uid})"
        except KeyError:
            return f"uid {creds.uid}"
    return "unix socket" if _unix_sock(request) is not None else f"web {request.remote}"


def _unix_sock(request: web.Request) -> socket.socket | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock if sock is not None and sock.family == socket.AF_UNIX else None


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
