"""Fixtures of the tests that run daemons, servers and probes against each other."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from apiclient import A, B, Running
from daemons import Daemon, setup
from httpserver import Server, free_port
from pki import make_cert, name


@pytest.fixture
async def server():
    s = await Server().start()
    yield s
    await s.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("pymon test CA")).issuer_name(name("pymon test CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    day = dt.timedelta(days=1)
    return {
        "ca": tmp / "ca.pem",
        "good": make_cert(tmp, "good", now - day, now + 365 * day, (ca, key)),
        "expired": make_cert(tmp, "expired", now - 10 * day, now - 2 * day - dt.timedelta(hours=1), (ca, key)),
        "soon": make_cert(tmp, "soon", now - day, now + 3 * day + dt.timedelta(hours=1), (ca, key)),
    }


@pytest.fixture
def pymon(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log]}}]
    p:
      traptimeout: 1s
      periods: [{{alert: [log], upalert: [log]}}]
virtual_services:
  - vip: 10.9.9.9:80
    watch: g:s
    quiescent: true
    real_servers: [{A}, {B}]
ipvs: {{dry_run: true}}
""", groups=f"g: [{A}, {B}]", glob=f", control_port: {port}")
    d = Daemon(cfg)
    try:
        yield Running(tmp_path, d, port)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
