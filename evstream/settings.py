"""Settings, one pydantic-settings model per concern, read from ``EVSTREAM_*`` variables.

* :class:`KafkaSettings` — how to reach the cluster (``EVSTREAM_BOOTSTRAP_SERVERS``,
  ``EVSTREAM_SECURITY_PROTOCOL``, ``EVSTREAM_SASL_*``, ``EVSTREAM_SSL_*``,
  ``EVSTREAM_KAFKA_EXTRA`` as a JSON object of librdkafka passthrough properties).
* :class:`RegistrySettings` — the schema registry (``EVSTREAM_REGISTRY_URL``, ...).
* :class:`ProjectSettings` — the user's project: its event catalog (``EVSTREAM_CATALOG``), its
  committed schema history (``EVSTREAM_SCHEMA_DIR``) and where its modules live
  (``EVSTREAM_APP_DIR``); also read from ``[tool.evstream]`` in the nearest ``pyproject.toml``.
  :func:`project_catalog` loads the catalog it names.

:func:`librdkafka_config` is the one place that turns them into librdkafka keys; it also routes
librdkafka's own log lines (``FAIL``, ``Connect ... failed``...) to the Python logger
``evstream.librdkafka`` instead of stderr (silent unless the application configures logging;
:func:`evstream.logs.configure_logging` shows them at INFO and DEBUG only).
"""

from __future__ import annotations

import logging
import ssl
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from evstream.errors import ConfigError, UnknownConfigKeyError

if TYPE_CHECKING:
    from evstream.schemas.catalog import Catalog

__all__ = [
    "LIBRDKAFKA_LOGGER",
    "NO_CATALOG",
    "KafkaSettings",
    "ProjectSettings",
    "RegistrySettings",
    "aiokafka_config",
    "find_pyproject",
    "librdkafka_config",
    "project_catalog",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
PassthroughValue = str | int | float | bool

LIBRDKAFKA_LOGGER = "evstream.librdkafka"
# No handler of its own would let Python's last-resort handler print warnings to stderr.
logging.getLogger(LIBRDKAFKA_LOGGER).addHandler(logging.NullHandler())

# librdkafka keys that typed fields own; passing them through `extra` would be ambiguous.
_TYPED_KEYS = {
    "bootstrap.servers": "bootstrap_servers (EVSTREAM_BOOTSTRAP_SERVERS)",
    "client.id": "client_id (EVSTREAM_CLIENT_ID)",
    "security.protocol": "security_protocol (EVSTREAM_SECURITY_PROTOCOL)",
    "sasl.mechanism": "sasl_mechanism (EVSTREAM_SASL_MECHANISM)",
    "sasl.mechanisms": "sasl_mechanism (EVSTREAM_SASL_MECHANISM)",
    "sasl.username": "sasl_username (EVSTREAM_SASL_USERNAME)",
    "sasl.password": "sasl_password (EVSTREAM_SASL_PASSWORD)",
    "ssl.ca.location": "ssl_ca_location (EVSTREAM_SSL_CA_LOCATION)",
    "ssl.certificate.location": "ssl_certificate_location (EVSTREAM_SSL_CERTIFICATE_LOCATION)",
    "ssl.key.location": "ssl_key_location (EVSTREAM_SSL_KEY_LOCATION)",
    "ssl.key.password": "ssl_key_password (EVSTREAM_SSL_KEY_PASSWORD)",
}


class KafkaSettings(BaseSettings):
    """How evstream clients connect to Kafka. Every field reads ``EVSTREAM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list. Env EVSTREAM_BOOTSTRAP_SERVERS; default 127.0.0.1:9092.",
    )
    client_id: str = Field(default="evstream", description="Env EVSTREAM_CLIENT_ID; default 'evstream'.")
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="Env EVSTREAM_SECURITY_PROTOCOL; default PLAINTEXT."
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="Env EVSTREAM_SASL_MECHANISM; required with SASL_* protocols."
    )
    sasl_username: str | None = Field(default=None, description="Env EVSTREAM_SASL_USERNAME.")
    sasl_password: SecretStr | None = Field(default=None, description="Env EVSTREAM_SASL_PASSWORD.")
    sasl_password_file: Path | None = Field(
        default=None,
        description="Env EVSTREAM_SASL_PASSWORD_FILE: a file holding the SASL password (a mounted "
        "secret; read when a client is configured, trailing newline ignored). Instead of the password.",
    )
    ssl_ca_location: Path | None = Field(default=None, description="Env EVSTREAM_SSL_CA_LOCATION (PEM file).")
    ssl_certificate_location: Path | None = Field(
        default=None, description="Env EVSTREAM_SSL_CERTIFICATE_LOCATION (client cert, PEM)."
    )
    ssl_key_location: Path | None = Field(
        default=None, description="Env EVSTREAM_SSL_KEY_LOCATION (client key, PEM)."
    )
    ssl_key_password: SecretStr | None = Field(default=None, description="Env EVSTREAM_SSL_KEY_PASSWORD.")
    kafka_extra: dict[str, PassthroughValue] = Field(
        default_factory=dict,
        description="Extra librdkafka properties, checked against librdkafka itself. "
        "Env EVSTREAM_KAFKA_EXTRA as JSON, e.g. '{\"socket.timeout.ms\": 10000}'; default {}.",
    )

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"sasl_mechanism is required with security_protocol={self.security_protocol}"
                )
            if self.sasl_mechanism != "OAUTHBEARER" and (
                self.sasl_username is None or (self.sasl_password is None and self.sasl_password_file is None)
            ):
                raise ValueError(
                    f"sasl_username and sasl_password are required with {self.sasl_mechanism} "
                    "(or sasl_password_file instead of the password)"
                )
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("set sasl_password or sasl_password_file, not both")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("mTLS needs both ssl_certificate_location and ssl_key_location")
        return self

    def password(self) -> str | None:
        """The SASL password: ``sasl_password``, else the content of ``sasl_password_file``."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is None:
            return None
        try:
            return self.sasl_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the SASL password file {self.sasl_password_file} "
                f"(EVSTREAM_SASL_PASSWORD_FILE): {exc.__class__.__name__}"
            ) from None


class RegistrySettings(BaseSettings):
    """How evstream reaches the schema registry (Confluent-compatible API)."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_REGISTRY_", frozen=True, extra="ignore")

    url: str = Field(
        default="http://127.0.0.1:8081",
        description="Base URL of a Confluent-compatible API; for Apicurio end it with /apis/ccompat/v7. "
        "Env EVSTREAM_REGISTRY_URL; default http://127.0.0.1:8081.",
    )
    basic_auth_user: str | None = Field(default=None, description="Env EVSTREAM_REGISTRY_BASIC_AUTH_USER.")
    basic_auth_password: SecretStr | None = Field(
        default=None, description="Env EVSTREAM_REGISTRY_BASIC_AUTH_PASSWORD."
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Read/write timeout of one registry request (a hung registry answers nothing). "
        "Env EVSTREAM_REGISTRY_TIMEOUT_S; default 5.",
    )
    connect_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="TCP connect timeout. Env EVSTREAM_REGISTRY_CONNECT_TIMEOUT_S; default 2.",
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a request that timed out, could not connect or got a 5xx/429. "
        "Env EVSTREAM_REGISTRY_MAX_RETRIES; default 2.",
    )
    retry_wait_s: float = Field(
        default=0.2,
        ge=0,
        description="First backoff between retries (full jitter, doubling). "
        "Env EVSTREAM_REGISTRY_RETRY_WAIT_S; default 0.2.",
    )
    retry_wait_max_s: float = Field(
        default=1.0, ge=0, description="Backoff cap. Env EVSTREAM_REGISTRY_RETRY_WAIT_MAX_S; default 1."
    )

    @property
    def call_budget_s(self) -> float:
        """The longest one registry call can take, retries and backoff included."""
        attempt = self.connect_timeout_s + self.timeout_s
        return (self.max_retries + 1) * attempt + self.max_retries * self.retry_wait_max_s

    def client_config(self) -> dict[str, Any]:
        """Configuration for confluent-kafka's ``SchemaRegistryClient``: every call bounded by
        :attr:`call_budget_s` (the client itself waits forever by default)."""
        conf: dict[str, Any] = {"url": self.url}
        if self.basic_auth_user is not None:
            password = self.basic_auth_password.get_secret_value() if self.basic_auth_password else ""
            conf["basic.auth.user.info"] = f"{self.basic_auth_user}:{password}"
        if not self.url.startswith("mock://"):  # the mock client takes no transport options
            # httpx's (connect, read, write, pool) form: httpx or httpx2, whichever the client uses.
            conf["timeout"] = (self.connect_timeout_s, self.timeout_s, self.timeout_s, self.connect_timeout_s)
            conf["max.retries"] = self.max_retries
            conf["retries.wait.ms"] = int(self.retry_wait_s * 1000)
            conf["retries.max.wait.ms"] = int(self.retry_wait_max_s * 1000)
        return conf


def librdkafka_config(settings: KafkaSettings, **overrides: PassthroughValue) -> dict[str, Any]:
    """Turn ``settings`` (plus per-client ``overrides``, in librdkafka spelling) into a config dict.

    Passthrough keys (``kafka_extra`` and ``overrides``) are checked by librdkafka itself, so a
    misspelt key fails here with :class:`UnknownConfigKeyError` naming it, not later in a client.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol,
        # librdkafka's log lines through Python logging (served by the client's poll/consume calls).
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
    }
    if settings.sasl_mechanism is not None:
        conf["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username is not None:
        conf["sasl.username"] = settings.sasl_username
    password = settings.password()
    if password is not None:
        conf["sasl.password"] = password
    for key, path in (
        ("ssl.ca.location", settings.ssl_ca_location),
        ("ssl.certificate.location", settings.ssl_certificate_location),
        ("ssl.key.location", settings.ssl_key_location),
    ):
        if path is not None:
            conf[key] = str(path)
    if settings.ssl_key_password is not None:
        conf["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    passthrough = {**settings.kafka_extra, **overrides}
    for key, value in passthrough.items():
        if key in _TYPED_KEYS and key in settings.kafka_extra:
            raise ConfigError(f"{key!r} in EVSTREAM_KAFKA_EXTRA: set it as {_TYPED_KEYS[key]} instead")
        _check_property(key, value)
    conf.update(passthrough)
    return conf


def aiokafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """The same connection as :func:`librdkafka_config`, as keyword arguments of aiokafka's clients
    (``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``; faust passes them on).

    TLS always verifies the broker's certificate and host name (``ssl_ca_location`` or the system
    CAs); a client certificate and key make it mTLS. ``kafka_extra`` is librdkafka-only and not used.
    """
    conf: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism is not None:
        conf["sasl_mechanism"] = settings.sasl_mechanism
    if settings.sasl_username is not None:
        conf["sasl_plain_username"] = settings.sasl_username
    password = settings.password()
    if password is not None:
        conf["sasl_plain_password"] = password
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_ca_location) if settings.ssl_ca_location is not None else None
        )
        if settings.ssl_certificate_location is not None and settings.ssl_key_location is not None:
            key_password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
            context.load_cert_chain(
                str(settings.ssl_certificate_location), str(settings.ssl_key_location), key_password
            )
        conf["ssl_context"] = context
    return conf


def _check_property(key: str, value: PassthroughValue) -> None:
    """Ask librdkafka whether ``key=value`` is a valid client property (no network I/O)."""
    if _property_error(key, str(value)) is not None:
        # Distinguish a bad name from a bad value by retrying with the property's name only.
        raise (
            UnknownConfigKeyError(key)
            if _property_unknown(key)
            else ConfigError(f"invalid value {value!r} for Kafka client property {key!r}")
        )


@lru_cache(maxsize=256)
def _property_error(key: str, value: str) -> str | None:
    import confluent_kafka  # noqa: PLC0415 - importing the settings must not load the client library

    try:
        # No bootstrap.servers: librdkafka builds its config and starts no connection.
        confluent_kafka.Producer({key: value, "log_level": 0})
    except confluent_kafka.KafkaException as exc:
        return str(exc)
    return None


def _property_unknown(key: str) -> bool:
    err = _property_error(key, "")
    return err is not None and "No such configuration property" in err


# ---------------------------------------------------------------------------- the user's project


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` from ``start`` (default: the working directory) upwards."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


class _PyprojectSource(PydanticBaseSettingsSource):
    """``[tool.evstream]`` of the nearest pyproject.toml; relative paths are relative to its folder.

    Also supplies the project-relative default of ``schema_dir`` (``<project root>/schemas/avro``).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        path = find_pyproject()
        root = path.parent if path is not None else Path.cwd()
        table: dict[str, Any] = {}
        if path is not None:
            try:
                document = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read [tool.evstream] ({exc})") from exc
            found = document.get("tool", {}).get("evstream", {})
            if not isinstance(found, dict):
                raise ConfigError(f"{path}: [tool.evstream] must be a table")
            unknown = sorted(set(found) - set(self.settings_cls.model_fields))
            if unknown:
                raise ConfigError(f"{path}: unknown [tool.evstream] key(s) {', '.join(unknown)}")
            table = dict(found)
        for key in ("schema_dir", "app_dir"):
            if isinstance(table.get(key), str):
                table[key] = root / table[key]
        table.setdefault("schema_dir", root / "schemas" / "avro")
        if path is not None:  # the project's modules resolve from its root, also from a subfolder
            table.setdefault("app_dir", root)
        return table


class ProjectSettings(BaseSettings):
    """The user's project. Each field reads ``EVSTREAM_<FIELD>``, else ``[tool.evstream]`` in the
    nearest pyproject.toml from the working directory upwards (the environment wins over the file;
    relative paths in the file are relative to the file's folder, in the environment to the working
    directory)."""

    model_config = SettingsConfigDict(env_prefix="EVSTREAM_", frozen=True, extra="ignore")

    catalog: str | None = Field(
        default=None,
        description="The event catalog as module:attribute (e.g. myapp.events:CATALOG), used by every "
        "command and component not given one. Env EVSTREAM_CATALOG or [tool.evstream] catalog; no default.",
    )
    schema_dir: Path = Field(
        default=Path("schemas/avro"),
        description="Root of the committed Avro history (<subject>/v<N>.avsc). Env EVSTREAM_SCHEMA_DIR or "
        "[tool.evstream] schema_dir; default schemas/avro in the project root (the pyproject.toml's folder, "
        "else the working directory).",
    )
    app_dir: Path = Field(
        default=Path(),
        description="Folder put first on sys.path before importing a module:attribute target "
        "(catalogs, handlers, apps). Env EVSTREAM_APP_DIR or [tool.evstream] app_dir; default the project "
        "root (the pyproject.toml's folder, else the working directory).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _PyprojectSource(settings_cls)


NO_CATALOG = (
    "no event catalog configured: set EVSTREAM_CATALOG=module:CATALOG or [tool.evstream] catalog "
    "in pyproject.toml"
)


def project_catalog(spec: str | None = None, settings: ProjectSettings | None = None) -> Catalog:
    """Load the catalog ``spec`` names, else the project's (:class:`ConfigError` when there is none)."""
    from evstream.schemas.catalog import load_catalog  # noqa: PLC0415 - the catalog loads its models

    project = settings or ProjectSettings()
    spec = spec or project.catalog
    if not spec:
        raise ConfigError(NO_CATALOG)
    # The project's modules resolve from its app dir (as for handlers), also from a console script.
    return load_catalog(spec, app_dir=project.app_dir)
