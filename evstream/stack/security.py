"""Key material and users of a secured local stack (``evstream stack up --secure``).

Everything lives in ``<data dir>/security`` and is made once, at the first (formatting) ``up``:

* ``ca.pem`` — a self-signed CA (public; what clients verify the brokers with) and ``ca.key``;
* ``kafka-<n>.p12`` — node ``n``'s key and certificate (SAN ``127.0.0.1``, ``localhost``),
  signed by the CA, as a PKCS#12 keystore (Java reads it; ``cryptography`` writes it);
* ``secrets.json`` — the SCRAM passwords of the admin and the application user and the
  keystore password; ``<user>.password`` — each password alone (for ``EVSTREAM_SASL_PASSWORD_FILE``).

Secret files are created with mode 0600 (owner only) and never leave the data dir: no command
prints a password; ``stack up -o json`` prints where the files are.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

__all__ = [
    "ADMIN_USER",
    "APP_USER",
    "MECHANISM",
    "SECURITY_DIR",
    "StackSecrets",
    "client_properties",
    "create_material",
    "load_secrets",
    "make_ca",
    "node_principal",
    "redact",
    "registry_kafka_properties",
    "write_secret",
]

SECURITY_DIR = "security"
ADMIN_USER = "admin"
APP_USER = "app"
MECHANISM = "SCRAM-SHA-512"
_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class StackSecrets:
    """Where a secured stack's key material is, and the secrets themselves (never printed)."""

    directory: Path
    admin_password: str
    app_password: str
    keystore_password: str

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def secrets_file(self) -> Path:
        return self.directory / "secrets.json"

    def password_file(self, user: str) -> Path:
        return self.directory / f"{user}.password"

    def keystore(self, node_id: int) -> Path:
        return self.directory / f"kafka-{node_id}.p12"


def node_principal(node_id: int) -> str:
    """The principal a node's certificate authenticates as on the (mTLS) controller listener."""
    return f"User:CN=evstream-kafka-{node_id}"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (created 0600, never widened)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _password() -> str:
    # URL-safe alphabet: no character that StorageTool's --add-scram syntax or JAAS quoting cares about.
    return secrets.token_urlsafe(24)


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a CA-signed certificate for ``hosts`` (server and client auth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_material(directory: Path, node_ids: list[int]) -> StackSecrets:
    """Make the CA, one keystore per node and the users' passwords in ``directory`` (new)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stack_secrets = StackSecrets(
        directory=directory,
        admin_password=_password(),
        app_password=_password(),
        keystore_password=_password(),
    )
    ca_key, ca_cert = make_ca("evstream local stack CA")
    stack_secrets.ca_file.write_bytes(pem(ca_cert))
    write_secret(
        directory / "ca.key",
        ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(stack_secrets.keystore_password.encode())
    )
    for node_id in node_ids:
        key, cert = issue(ca_key, ca_cert, f"evstream-kafka-{node_id}")
        blob = pkcs12.serialize_key_and_certificates(
            f"kafka-{node_id}".encode(), key, cert, [ca_cert], encryption
        )
        path = stack_secrets.keystore(node_id)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
    write_secret(
        stack_secrets.secrets_file,
        json.dumps(
            {
                "mechanism": MECHANISM,
                "users": {ADMIN_USER: stack_secrets.admin_password, APP_USER: stack_secrets.app_password},
                "keystore_password": stack_secrets.keystore_password,
            },
            indent=2,
        ),
    )
    write_secret(stack_secrets.password_file(ADMIN_USER), stack_secrets.admin_password)
    write_secret(stack_secrets.password_file(APP_USER), stack_secrets.app_password)
    return stack_secrets


def load_secrets(directory: Path) -> StackSecrets:
    """Read the secrets :func:`create_material` wrote (``OSError``/``ValueError`` when absent or bad)."""
    found = json.loads((directory / "secrets.json").read_text())
    return StackSecrets(
        directory=directory,
        admin_password=str(found["users"][ADMIN_USER]),
        app_password=str(found["users"][APP_USER]),
        keystore_password=str(found["keystore_password"]),
    )


def client_properties(directory: Path, user: str) -> dict[str, str]:
    """librdkafka settings for ``user`` (``admin`` or ``app``) of the secured stack in ``directory``."""
    found = load_secrets(directory)
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": found.admin_password if user == ADMIN_USER else found.app_password,
        "ssl.ca.location": str(found.ca_file),
    }


def registry_kafka_properties(directory: Path) -> str:
    """Quarkus properties that make the registry's kafkasql clients use SASL_SSL as the admin."""
    found = load_secrets(directory)
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{found.admin_password}";'
    )
    lines = ["# written by evstream stack up --secure (owner-only: it holds the admin password)"]
    for client in ("producer", "consumer", "admin"):
        prefix = f"apicurio.kafkasql.{client}."
        lines += [
            f"{prefix}security.protocol=SASL_SSL",
            f"{prefix}sasl.mechanism={MECHANISM}",
            f"{prefix}sasl.jaas.config={jaas}",
            f"{prefix}ssl.truststore.type=PEM",
            f"{prefix}ssl.truststore.location={found.ca_file}",
        ]
    return "\n".join(lines) + "\n"


def redact(text: str, directory: Path) -> str:
    """``text`` with every secret of the stack in ``directory`` replaced by ``***``."""
    try:
        found = load_secrets(directory)
    except (OSError, ValueError, KeyError):
        return text
    for secret in (found.admin_password, found.app_password, found.keystore_password):
        text = text.replace(secret, "***")
    return text
