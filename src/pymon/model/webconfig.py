"""The metrics listener's web config file (`globals.web_config`): the subset of the
Prometheus exporter-toolkit's format pymon serves, so one file format covers every
exporter on a director:

    tls_server_config:
      cert_file: /etc/pymon/metrics.crt
      key_file: /etc/pymon/metrics.key
    basic_auth_users:
      prometheus: $2y$10$...        # bcrypt, as `htpasswd -nBC 10 "" | tr -d ':\\n'` prints

Read with the config (a reload reads it again); every problem is `FILE:LINE:COL: msg`.
The keys pymon does not implement (client certificates, http_server_config) are an
error rather than ignored: a file written for another exporter must not silently
serve with less protection than it asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import yamlsrc

_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_TLS_KEYS = {"cert_file", "key_file"}


@dataclass(frozen=True)
class WebConfig:
    file: str
    cert_file: Path | None = None  # both or neither: TLS
    key_file: Path | None = None
    users: dict[str, str] = field(default_factory=dict)  # name -> bcrypt hash; empty: no basic auth

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def parse_web_config(file: Path) -> tuple[WebConfig | None, list[str]]:
    """The web config and its problems (located lines); None when unusable."""
    name = str(file)
    try:
        src = yamlsrc.load(file.read_text(), name)
    except OSError as e:
        return None, [f"{name}:1:1: cannot read the web config: {e.strerror}"]
    except UnicodeDecodeError:
        return None, [f"{name}:1:1: the web config is not UTF-8 text"]
    except yamlsrc.YamlError as e:
        return None, [str(e)]
    data: Any = src.data
    if not isinstance(data, dict):
        return None, [f"{src.where(())}: the web config must be a mapping"]
    problems: list[str] = []
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users"):
            problems.append(f"{src.where((key,), key=True)}: {key!r} is not supported by pymon's metrics "
                            "listener (tls_server_config: cert_file, key_file; basic_auth_users)")
    tls = data.get("tls_server_config") or {}
    cert = key = None
    if not isinstance(tls, dict):
        problems.append(f"{src.where(('tls_server_config',))}: tls_server_config must be a mapping")
        tls = {}
    for k in tls:
        if k not in _TLS_KEYS:
            problems.append(f"{src.where(('tls_server_config', k), key=True)}: tls_server_config.{k} is not "
                            "supported (cert_file and key_file are)")
    if tls and not (isinstance(tls.get("cert_file"), str) and isinstance(tls.get("key_file"), str)):
        problems.append(f"{src.where(('tls_server_config',))}: tls_server_config needs cert_file and key_file")
    elif tls:
        base = file.resolve().parent
        cert, key = base / tls["cert_file"], base / tls["key_file"]
        problems += _tls_problems(src, cert, key)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append(f"{src.where(('basic_auth_users',))}: basic_auth_users must map user names to bcrypt hashes")
        users = {}
    for user, h in users.items():
        if not isinstance(h, str) or not _BCRYPT.match(h):
            problems.append(f"{src.where(('basic_auth_users', user))}: the password of {user!r} must be a "
                            "bcrypt hash ($2y$10$..., from htpasswd -nB)")
    if problems:
        return None, problems
    return WebConfig(name, cert, key, {str(u): h for u, h in users.items()}), []


def _tls_problems(src: yamlsrc.Source, cert: Path, key: Path) -> list[str]:
    """Load the pair now, so `pymon check-config` and a reload catch a wrong file."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        return [f"{src.where(('tls_server_config',))}: cannot load {cert} with {key}: "
                f"{getattr(e, 'strerror', None) or e}"]
    return []
