"""TLS material for a SuperLink: lifetimes as asked, private keys private, rotation under one CA."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from flsplit.certificates import SERVER_DAYS, main, make_certificates, make_node_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _lifetime_days(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - cert.not_valid_before_utc) / datetime.timedelta(days=1)


def test_private_keys_are_written_owner_only_even_under_a_permissive_umask(tmp_path: Path) -> None:
    # Prepare: a umask that leaves new files world-readable, and a stale world-readable key
    stale = tmp_path / "certs" / "server.key"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    stale.chmod(0o644)
    umask = os.umask(0)
    # Execute
    try:
        paths = make_certificates(tmp_path / "certs")
        node_private, node_public = make_node_key(tmp_path / "keys", "node0")
    finally:
        os.umask(umask)
    # Assert
    assert {p.name: _mode(p) for p in (paths.server_key, paths.ca_key, node_private)} == {"server.key": 0o600, "ca.key": 0o600, "node0_key": 0o600}
    assert _mode(paths.server_cert) & 0o044 and _mode(node_public) & 0o044  # certificates and public keys stay readable


def test_server_certificate_lifetime_is_a_parameter_with_a_one_year_default(tmp_path: Path) -> None:
    # Execute
    default = make_certificates(tmp_path / "default")
    short = make_certificates(tmp_path / "short", days=30)
    # Assert (5 minutes of clock skew are allowed before the start)
    assert SERVER_DAYS == 365
    assert _lifetime_days(_cert(default.server_cert)) == pytest.approx(365, abs=0.01)
    assert _lifetime_days(_cert(short.server_cert)) == pytest.approx(30, abs=0.01)
    assert _lifetime_days(_cert(default.ca_cert)) == pytest.approx(3650, abs=0.01)


def test_running_again_rotates_the_server_certificate_under_the_same_ca(tmp_path: Path) -> None:
    # Prepare
    first = make_certificates(tmp_path / "certs", ("server.example.org",))
    ca_before, server_before = first.ca_cert.read_bytes(), first.server_cert.read_bytes()
    # Execute: the command line, as docs/deploy.md gives it for a rotation
    main([str(tmp_path / "certs"), "server.example.org", "10.0.0.5", "--days", "90"])
    # Assert: a new server certificate, signed by the unchanged CA (SuperNodes keep their ca.pem)
    ca, server = _cert(first.ca_cert), _cert(first.server_cert)
    assert first.ca_cert.read_bytes() == ca_before and first.server_cert.read_bytes() != server_before
    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["server.example.org"]
    assert _lifetime_days(server) == pytest.approx(90, abs=0.01)


def test_a_lifetime_under_one_day_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="days"):
        make_certificates(tmp_path, days=0)
