"""A certificate authority, a server certificate and SuperNode keys for a SuperLink's TLS.

Uses the ``cryptography`` package (a dependency of flwr), so no openssl binary is needed.
Private keys are written readable by their owner only (mode 0600) from the moment the file
exists. The CA key is kept beside ``ca.pem`` so that running the command again re-issues the
server certificate under the same CA: SuperNodes keep their ``ca.pem`` through a rotation.

    python -m flsplit.certificates certs server.example.org 10.0.0.5 [--days 365]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: Lifetime of a server certificate, in days, unless told otherwise: renew it before then.
SERVER_DAYS = 365
#: Lifetime of a new CA, in days: long, since every SuperNode holds its certificate.
CA_DAYS = 3650
PRIVATE = 0o600


@dataclass(frozen=True)
class Certificates:
    """Paths of the CA certificate and of the server's certificate and key (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @property
    def ca_key(self) -> Path:
        """The CA's private key: stays on the machine that issues certificates, never on a SuperNode."""
        return self.ca_cert.with_suffix(".key")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), PRIVATE)  # an existing file keeps its mode through O_CREAT
        handle.write(data)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (write it with ``write_private``)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def self_signed(common_name: str, days: int, ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new EC key and a certificate it signs itself, valid from five minutes ago for ``days`` days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()), key


def _load_or_make_ca(paths: Certificates, now: datetime.datetime, ca_days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in ``paths`` if its certificate and key are both there, else a new one."""
    if paths.ca_cert.exists() and paths.ca_key.exists():
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key}: not an EC private key; move ca.pem and ca.key away to make a new CA")
        return x509.load_pem_x509_certificate(paths.ca_cert.read_bytes()), key
    cert, key = self_signed("flsplit CA", ca_days, ca=True)
    write_private(paths.ca_key, pem_key(key))
    paths.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def make_certificates(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = SERVER_DAYS, ca_days: int = CA_DAYS
) -> Certificates:
    """Write a server certificate valid for ``hosts`` and ``days`` days into ``directory``.

    The CA (``ca.pem``, ``ca.key``) is reused when both files are there, else made, valid for
    ``ca_days`` days; the server certificate never outlives it.
    """
    if days < 1 or ca_days < 1:
        raise ValueError(f"days and ca_days: certificate lifetimes must be at least 1 day, got {days} and {ca_days}")
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = _load_or_make_ca(paths, now, ca_days)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(paths.server_key, pem_key(server_key))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC key pair in OpenSSH format for SuperNode authentication: ``(private, public)``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / f"{name}_key"
    public = directory / f"{name}_key.pub"
    write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m flsplit.certificates DIR HOST...``: write (or renew) the server certificate."""
    parser = argparse.ArgumentParser(prog="python -m flsplit.certificates", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where ca.pem, ca.key, server.pem and server.key go")
    parser.add_argument("hosts", nargs="+", help="the SuperLink's names and addresses, as SuperNodes dial it")
    parser.add_argument("--days", type=int, default=SERVER_DAYS, help=f"server certificate lifetime (default {SERVER_DAYS})")
    parser.add_argument("--ca-days", type=int, default=CA_DAYS, help=f"lifetime of a new CA (default {CA_DAYS})")
    args = parser.parse_args(argv)
    paths = make_certificates(args.directory, tuple(args.hosts), args.days, args.ca_days)
    expires = x509.load_pem_x509_certificate(paths.server_cert.read_bytes()).not_valid_after_utc
    print(f"{paths.server_cert} and {paths.server_key} (0600) for {', '.join(args.hosts)}, valid until {expires:%Y-%m-%d}; CA {paths.ca_cert}")


if __name__ == "__main__":
    main()
