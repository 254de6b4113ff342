"""One place that turns schema-registry client failures into :class:`RegistryError`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from confluent_kafka.schema_registry.error import SchemaRegistryError

from evstream.errors import EvstreamError, RegistryError, RegistryUnavailableError

NOT_FOUND = (40401, 40403)  # Confluent error codes: subject / schema not found


def is_not_found(exc: SchemaRegistryError) -> bool:
    return exc.error_code in NOT_FOUND or exc.http_status_code == 404


@contextlib.contextmanager
def registry_errors(what: str) -> Iterator[None]:
    """Wrap registry calls: API errors (:class:`RegistryError`), and transport errors, timeouts and
    5xx/429 answers left after the client's retries (:class:`RegistryUnavailableError`)."""
    try:
        yield
    except EvstreamError:
        raise
    except SchemaRegistryError as exc:
        if exc.http_status_code in (408, 429) or exc.http_status_code >= 500:  # still failing after retries
            raise RegistryUnavailableError(f"schema registry unavailable: {what}: {exc}") from exc
        raise RegistryError(f"{what}: {exc}") from exc
    except Exception as exc:  # connection refused, timeouts... from a transport we do not import
        raise RegistryUnavailableError(
            f"schema registry unavailable: {what}: {exc.__class__.__name__}: {exc or 'timed out'}"
        ) from exc
