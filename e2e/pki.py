"""The local cluster's PKI: one CA, the API server's serving cert, client certs, service-account keys.

Written as PEM files into the cluster's state dir, the same set kubeadm makes, only smaller (EC keys,
one CA for serving and clients, short validity).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: CertPair
    serving: CertPair
    admin: CertPair
    controller_manager: CertPair
    sa_public: Path
    sa_private: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _issue(
    directory: Path,
    stem: str,
    subject: x509.Name,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[CertPair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Self-signed CA when ``ca`` is None, else a leaf signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer, signer = (subject, key) if ca is None else (ca[0].subject, ca[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage or []), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair, cert, key


def generate(directory: Path, ips: tuple[str, ...]) -> Pki:
    """Create every credential the control plane, the node and Prometheus need.

    ``ips``: the API server's addresses besides 127.0.0.1 (the `kubernetes` Service's, the node bridge's).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_pair, ca_cert, ca_key = _issue(directory, "ca", _name("goodput-e2e-ca"), None)
    ca = (ca_cert, ca_key)
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", *ips)]
    serving, _, _ = _issue(
        directory,
        "apiserver",
        _name("kube-apiserver"),
        ca,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=sans,
    )
    client = [ExtendedKeyUsageOID.CLIENT_AUTH]
    admin, _, _ = _issue(directory, "admin", _name("goodput-e2e-admin", "system:masters"), ca, usage=client)
    kcm, _, _ = _issue(
        directory, "controller-manager", _name("system:kube-controller-manager"), ca, usage=client
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
    _write_key(sa_private, sa_key)
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(ca_pair, serving, admin, kcm, sa_public, sa_private)


def issue(
    creds: Pki, stem: str, common_name: str, organization: str | None = None, server_ips: tuple[str, ...] = ()
) -> CertPair:
    """A leaf signed by the stack's CA, beside it: a client cert, or a serving cert for ``server_ips``."""
    ca_cert = x509.load_pem_x509_certificate(creds.ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(creds.ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server_ips else [ExtendedKeyUsageOID.CLIENT_AUTH]
    sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips] or None
    name = _name(common_name, organization)
    pair, _, _ = _issue(creds.ca.cert.parent, stem, name, (ca_cert, ca_key), usage=usage, sans=sans)
    return pair
