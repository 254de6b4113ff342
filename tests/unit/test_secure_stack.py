"""The secured stack's key material and the client settings that connect to it (no broker)."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from evstream import ConfigError, KafkaSettings, librdkafka_config
from evstream.settings import aiokafka_config
from evstream.stack import security
from evstream.stack.manager import _overlay


def test_material_is_owner_only_and_verifiable(tmp_path: Path) -> None:
    found = security.create_material(tmp_path / "security", [1, 2, 3])
    for path in (found.secrets_file, found.password_file("admin"), found.password_file("app")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "security" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(found.keystore(2).stat().st_mode) == 0o600
    assert found.password_file("app").read_text() == found.app_password
    assert len({found.admin_password, found.app_password, found.keystore_password}) == 3
    key, cert, cas = pkcs12.load_key_and_certificates(
        found.keystore(2).read_bytes(), found.keystore_password.encode()
    )
    assert key is not None
    assert cert is not None
    assert cert.subject.rfc4514_string() == "CN=evstream-kafka-2"
    assert security.node_principal(2) == f"User:{cert.subject.rfc4514_string()}"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca = x509.load_pem_x509_certificate(found.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert [c.subject for c in cas] == [ca.subject]
    assert security.load_secrets(found.directory) == found
    text = f"a {found.app_password} b {found.admin_password}"
    assert security.redact(text, found.directory) == "a *** b ***"


def test_overlay_replaces_the_templates_listeners() -> None:
    base = "# c\nlisteners=PLAINTEXT://x\nnode.id=1\ninter.broker.listener.name=PLAINTEXT\n"
    out = _overlay(base, "listeners=SASL_SSL://x\ninter.broker.listener.name=SASL_SSL\n")
    assert out.count("listeners=") == 1
    assert "PLAINTEXT" not in out
    assert "node.id=1" in out


def _secure(tmp_path: Path, **extra: object) -> KafkaSettings:
    found = security.create_material(tmp_path / "security", [1])
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": "127.0.0.1:1",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "app",
            "sasl_password_file": found.password_file("app"),
            "ssl_ca_location": found.ca_file,
            **extra,
        }
    )


def test_password_file_feeds_both_client_libraries(tmp_path: Path) -> None:
    settings = _secure(tmp_path)
    password = (tmp_path / "security" / "app.password").read_text()
    conf = librdkafka_config(settings)
    assert conf["sasl.password"] == password
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    aio = aiokafka_config(settings)
    assert aio["sasl_plain_password"] == password
    assert aio["sasl_plain_username"] == "app"
    context = aio["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert password not in repr(settings)
    assert password not in str(settings.model_dump())


def test_password_file_errors_never_show_the_password(tmp_path: Path) -> None:
    settings = _secure(tmp_path, sasl_password_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"cannot read the SASL password file .*missing"):
        librdkafka_config(settings)
    with pytest.raises(ValueError, match="not both"):
        _secure(tmp_path / "b", sasl_password="x")  # noqa: S106  # noqa: S106
    with pytest.raises(ValueError, match="both ssl_certificate_location and ssl_key_location"):
        _secure(tmp_path / "c", ssl_certificate_location=tmp_path / "cert.pem")


def test_password_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv("EVSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EVSTREAM_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("EVSTREAM_SASL_USERNAME", "app")
    monkeypatch.setenv("EVSTREAM_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    assert librdkafka_config(KafkaSettings())["sasl.password"] == "s3cret"
