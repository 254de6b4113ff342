from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from evstream import ConfigError, KafkaSettings, RegistrySettings, UnknownConfigKeyError, librdkafka_config
from tests.helpers import one_line_error, run_cli


def test_settings_read_evstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVSTREAM_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("EVSTREAM_KAFKA_EXTRA", '{"socket.timeout.ms": 12345}')
    monkeypatch.setenv("EVSTREAM_REGISTRY_URL", "http://reg:8080/apis/ccompat/v7")
    conf = librdkafka_config(KafkaSettings())
    assert conf["bootstrap.servers"] == "k1:9092,k2:9092"
    assert conf["socket.timeout.ms"] == 12345
    assert conf["security.protocol"] == "PLAINTEXT"
    assert RegistrySettings().client_config()["url"] == "http://reg:8080/apis/ccompat/v7"


def test_sasl_ssl_fields_map_to_librdkafka_and_hide_secrets() -> None:
    settings = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
        ssl_ca_location="/etc/ca.pem",
    )
    assert "s3cret" not in repr(settings)
    conf = librdkafka_config(settings)
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "svc"
    assert conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["security.protocol"] == "SASL_SSL"


def test_sasl_without_credentials_is_rejected() -> None:
    with pytest.raises(ValidationError, match="sasl_mechanism is required"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="sasl_username and sasl_password are required"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")


def test_unknown_passthrough_key_is_named() -> None:
    settings = KafkaSettings(kafka_extra={"lingr.ms": 5})
    with pytest.raises(UnknownConfigKeyError, match=r"'lingr\.ms'") as info:
        librdkafka_config(settings)
    assert info.value.key == "lingr.ms"
    assert isinstance(info.value, ValueError)


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(UnknownConfigKeyError, match="'acks_all'"):
        librdkafka_config(KafkaSettings(), acks_all=True)


def test_bad_passthrough_value_names_key_and_value() -> None:
    with pytest.raises(
        ConfigError, match=r"invalid value 'soon' for Kafka client property 'linger\.ms'"
    ) as info:
        librdkafka_config(KafkaSettings(kafka_extra={"linger.ms": "soon"}))
    assert not isinstance(info.value, UnknownConfigKeyError)


def test_typed_keys_cannot_be_smuggled_through_extra() -> None:
    with pytest.raises(ConfigError, match="set it as bootstrap_servers"):
        librdkafka_config(KafkaSettings(kafka_extra={"bootstrap.servers": "x:1"}))


def test_valid_passthrough_and_overrides_are_kept() -> None:
    conf = librdkafka_config(KafkaSettings(kafka_extra={"linger.ms": 7}), **{"compression.type": "zstd"})
    assert conf["linger.ms"] == 7
    assert conf["compression.type"] == "zstd"


def test_settings_are_frozen() -> None:
    settings = KafkaSettings()
    with pytest.raises(ValidationError):
        settings.bootstrap_servers = "elsewhere:9092"  # type: ignore[misc]


def test_registry_basic_auth() -> None:
    settings = RegistrySettings(url="http://r", basic_auth_user="u", basic_auth_password=SecretStr("p"))
    conf = settings.client_config()
    assert (conf["url"], conf["basic.auth.user.info"]) == ("http://r", "u:p")


def test_registry_calls_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """confluent-kafka's client waits forever unless given a timeout (issue 14, defect 1)."""
    monkeypatch.setenv("EVSTREAM_REGISTRY_TIMEOUT_S", "3")
    monkeypatch.setenv("EVSTREAM_REGISTRY_MAX_RETRIES", "1")
    settings = RegistrySettings(url="http://r")
    conf = settings.client_config()
    assert conf["timeout"] == (2.0, 3.0, 3.0, 2.0)  # connect, read, write, pool
    assert (conf["max.retries"], conf["retries.wait.ms"], conf["retries.max.wait.ms"]) == (1, 200, 1000)
    assert settings.call_budget_s == 2 * (2.0 + 3.0) + 1.0
    assert "timeout" not in RegistrySettings(url="mock://x").client_config()


def test_librdkafka_logs_go_to_python_logging() -> None:
    """Every client evstream builds logs through ``evstream.librdkafka``, never stderr (defect 5)."""
    import logging  # noqa: PLC0415

    conf = librdkafka_config(KafkaSettings())
    assert conf["logger"] is logging.getLogger("evstream.librdkafka")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"EVSTREAM_SECURITY_PROTOCOL": "bogus"},
            "error: invalid EVSTREAM_SECURITY_PROTOCOL: Input should be",
        ),
        ({"EVSTREAM_KAFKA_EXTRA": "not json"}, 'error: error parsing value for field "kafka_extra"'),
        ({"EVSTREAM_KAFKA_EXTRA": '{"lingr.ms": 1}'}, "error: unknown Kafka client property 'lingr.ms'"),
    ],
)
def test_cli_reports_bad_settings_in_one_line(env: dict[str, str], message: str) -> None:
    proc = run_cli("topics", "list", env={**env, "EVSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=60)
    assert proc.returncode == 2
    assert one_line_error(proc).startswith(message)


def test_configure_logging_shows_librdkafka_only_at_info_and_debug() -> None:
    import logging  # noqa: PLC0415

    from evstream.logs import configure_logging  # noqa: PLC0415

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("text", "WARNING")
        assert not logging.getLogger("evstream.librdkafka").isEnabledFor(logging.CRITICAL)
        configure_logging("text", "INFO")
        assert logging.getLogger("evstream.librdkafka").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("evstream.librdkafka").setLevel(logging.NOTSET)
