"""Turn librdkafka's authentication, TLS and authorization errors into evstream's typed ones.

Every client (producer, consumer runner, admin commands) asks :func:`security_error` about the
errors librdkafka reports, so a wrong password, a CA mismatch or a missing ACL surfaces as one
line naming what is wrong, never as "all brokers are down" after a timeout. Messages carry the
user name and the resource, never a password.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from evstream.errors import (
    AuthorizationError,
    EvstreamError,
    GroupAuthorizationError,
    KafkaAuthenticationError,
    KafkaSecurityError,
    KafkaTlsError,
    PublishAuthenticationError,
    PublishTlsError,
    TopicAuthorizationError,
)

if TYPE_CHECKING:
    from uuid import UUID

    from confluent_kafka import KafkaError

    from evstream.settings import KafkaSettings

__all__ = ["explain", "probe", "publish_refusal", "security_error", "topic_write_error"]

_TIMING = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)")
_BROKER = re.compile(r"^[a-z_]+://[^ ]+: ")


def _detail(err: KafkaError) -> str:
    text = _BROKER.sub("", err.str())
    return _TIMING.sub("", text).strip()


def security_error(  # noqa: PLR0911 - one branch per error code
    err: KafkaError, *, topic: str | None = None, group: str | None = None, user: str | None = None
) -> KafkaSecurityError | None:
    """The typed error for ``err`` when it is an authentication, TLS or authorization failure."""
    from confluent_kafka import KafkaError  # noqa: PLC0415 - the error tree stays client-free

    code = err.code()
    who = f" as {user!r}" if user else ""
    if code == KafkaError._AUTHENTICATION:
        return KafkaAuthenticationError(
            f"Kafka refused the SASL login{who}: wrong password or unknown user ({_detail(err)})"
        )
    if code == KafkaError._SSL:
        detail = _detail(err)
        if "verify failed" in detail or "certificate" in detail or "hostname" in detail.lower():
            return KafkaTlsError(
                f"the broker's TLS certificate failed verification ({detail}); check "
                "EVSTREAM_SSL_CA_LOCATION and that the bootstrap host names match the certificate "
                "(verification is never turned off)"
            )
        return KafkaTlsError(f"TLS with the broker failed: {detail}")
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        name = topic or "?"
        return AuthorizationError(
            f"not authorized on topic {name!r}: no ACL allows this principal{who} the operation "
            f"({_detail(err)})",
            resource_type="topic",
            resource=name,
            operation="READ/DESCRIBE",
        )
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        name = group or "?"
        return GroupAuthorizationError(
            f"not authorized to READ consumer group {name!r}{who}: declare an ACL "
            f"{{group: {name}, operations: [read]}} (or a group_prefix) for the principal",
            resource=name,
        )
    if code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        return AuthorizationError(
            f"not authorized to WRITE the transactional id{who} ({_detail(err)})",
            resource_type="transactional_id",
            operation="WRITE",
        )
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return AuthorizationError(
            f"not authorized on the cluster{who} ({_detail(err)})", resource_type="cluster"
        )
    return None


def topic_write_error(
    err: KafkaError, *, topic: str, event_id: UUID | None = None, what: str | None = None
) -> TopicAuthorizationError | None:
    """A delivery refused for want of a WRITE ACL on ``topic``, as :class:`TopicAuthorizationError`."""
    from confluent_kafka import KafkaError  # noqa: PLC0415

    if err.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return None
    return TopicAuthorizationError(
        f"{what or f'{topic}: event {event_id}'}: not authorized to WRITE to topic {topic!r} "
        "(TOPIC_AUTHORIZATION_FAILED: "
        "the principal needs an ACL allowing write on it); it was not written",
        topic=topic,
        event_id=event_id,
        kafka_error=err,
    )


def publish_refusal(
    security: KafkaSecurityError,
    what: str,
    *,
    topic: str | None = None,
    event_id: UUID | None = None,
    kafka_error: KafkaError | None = None,
) -> PublishAuthenticationError | PublishTlsError | None:
    """``security`` (a login or TLS failure) as the outcome of one publish: not written."""
    kind = PublishTlsError if isinstance(security, KafkaTlsError) else PublishAuthenticationError
    if not isinstance(security, KafkaAuthenticationError | KafkaTlsError):
        return None
    return kind(f"{what}: {security}; not written", topic=topic, event_id=event_id, kafka_error=kafka_error)


_UNREACHABLE = ("timed out", "_timed_out", "reachable", "brokers are down", "did not answer", "transport")


def probe(settings: KafkaSettings, timeout: float = 5.0) -> KafkaSecurityError | None:
    """Connect once with ``settings`` and return the login or TLS failure, if that is what happens.

    Used to explain a timeout: librdkafka retries a refused login forever, so without asking, a
    wrong password looks like an unreachable cluster.
    """
    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415

    from evstream.settings import librdkafka_config  # noqa: PLC0415

    found: list[KafkaSecurityError] = []

    def on_error(err: KafkaError) -> None:
        security = security_error(err, user=settings.sasl_username)
        if security is not None and not found:
            found.append(security)

    conf = librdkafka_config(settings, log_level=0)
    conf.update(error_cb=on_error)
    producer = Producer(conf)
    deadline = time.monotonic() + timeout
    while not found and time.monotonic() < deadline:
        try:
            producer.list_topics(timeout=0.5)
        except KafkaException:
            producer.poll(0.1)  # serves error_cb
            continue
        return None  # connected, logged in, verified
    producer.poll(0)
    return found[0] if found else None


def explain(exc: EvstreamError, settings: KafkaSettings | None = None) -> EvstreamError:
    """``exc``, or the login/TLS failure behind it when it reads like an unreachable cluster."""
    if isinstance(exc, KafkaSecurityError):
        return exc
    text = str(exc).lower()
    if not any(word in text for word in _UNREACHABLE):
        return exc
    try:
        from evstream.settings import KafkaSettings  # noqa: PLC0415

        settings = settings or KafkaSettings()
    except ValueError:
        return exc
    if settings.security_protocol == "PLAINTEXT":
        return exc
    try:
        return probe(settings) or exc
    except EvstreamError:
        return exc
