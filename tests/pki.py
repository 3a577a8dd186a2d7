"""A test CA and leaf certificates for TLS servers on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(tmp: Path, tag: str, not_before: dt.datetime, not_after: dt.datetime,
              ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> ssl.SSLContext:
    """A leaf for www.example.test and 127.0.0.1 signed by `ca`, as a server context."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("www.example.test"))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.test"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca[1], hashes.SHA256())
    )
    (tmp / f"{tag}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{tag}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / f"{tag}.pem", tmp / f"{tag}.key")
    return ctx
