"""ACLs as code: principals and what they may do, declared beside the topics (``acls:``).

.. code-block:: yaml

    acls:
      - principal: User:orders-service
        host: "*"                      # optional; default any host
        allow:
          - topic: orders              # exactly one resource per grant ...
            operations: [write, describe]
          - topic_prefix: orders.      # ... literal (topic, group, transactional_id) or prefixed
            operations: [read, describe]
          - group_prefix: orders-
            operations: [read]
          - transactional_id_prefix: orders-tx-
            operations: [write, describe]
          - cluster: true              # the cluster resource (idempotent_write, describe, ...)
            operations: [idempotent_write]

Only ALLOW rules are declared (the brokers deny whatever no rule allows). When a file has an
``acls`` key, every ACL on the cluster is managed by it: ``plan`` shows the ones the file no longer
declares as ``remove`` and ``apply`` deletes them only with ``--delete-acls``. A file without the
key leaves ACLs alone (and works against a cluster without an authorizer).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evstream.errors import TopicsAdminError

__all__ = ["Acl", "AclChange", "Grant", "PrincipalAcls", "apply_acl_changes", "describe_acls", "plan_acls"]

Operation = Literal[
    "all",
    "read",
    "write",
    "create",
    "delete",
    "alter",
    "describe",
    "describe_configs",
    "alter_configs",
    "idempotent_write",
    "cluster_action",
]
_RESOURCES = {
    "topic": ("topic", "literal"),
    "topic_prefix": ("topic", "prefixed"),
    "group": ("group", "literal"),
    "group_prefix": ("group", "prefixed"),
    "transactional_id": ("transactional_id", "literal"),
    "transactional_id_prefix": ("transactional_id", "prefixed"),
}
_TIMEOUT = 30.0


class Grant(BaseModel):
    """Operations allowed on one resource (a literal name, a name prefix, or the cluster)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str | None = None
    topic_prefix: str | None = None
    group: str | None = None
    group_prefix: str | None = None
    transactional_id: str | None = None
    transactional_id_prefix: str | None = None
    cluster: bool = False
    operations: tuple[Operation, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_resource(self) -> Grant:
        chosen = [key for key in _RESOURCES if getattr(self, key) is not None] + (["cluster"] * self.cluster)
        if len(chosen) != 1:
            raise ValueError(
                "each grant names exactly one of topic, topic_prefix, group, group_prefix, "
                f"transactional_id, transactional_id_prefix, cluster (got {', '.join(chosen) or 'none'})"
            )
        return self

    def resource(self) -> tuple[str, str, str]:
        """``(resource type, name, pattern)`` in evstream's lower-case spelling."""
        if self.cluster:
            return ("cluster", "kafka-cluster", "literal")
        for key, (kind, pattern) in _RESOURCES.items():
            value = getattr(self, key)
            if value is not None:
                return (kind, str(value), pattern)
        raise AssertionError("validated: one resource")  # pragma: no cover


class PrincipalAcls(BaseModel):
    """Everything one principal (``User:<name>``) is allowed to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principal: str = Field(pattern=r"^[A-Za-z]+:.+$")
    host: str = "*"
    allow: tuple[Grant, ...]


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule as Kafka stores it (lower-case names: ``topic``/``prefixed``/``write``)."""

    principal: str
    resource_type: str
    name: str
    pattern: str
    operation: str
    host: str = "*"

    def describe(self) -> str:
        prefix = "*" if self.pattern == "prefixed" else ""
        return f"{self.principal} {self.operation} {self.resource_type}:{self.name}{prefix}"


@dataclass(frozen=True)
class AclChange:
    """What ``apply`` does to one rule: ``add`` it, keep it, or (``--delete-acls``) ``remove`` it."""

    acl: Acl
    action: Literal["add", "unchanged", "remove"]


def declared_acls(principals: Iterable[PrincipalAcls]) -> list[Acl]:
    """Every rule the declaration makes, one per (principal, resource, operation), sorted."""
    found: set[Acl] = set()
    for entry in principals:
        for grant in entry.allow:
            kind, name, pattern = grant.resource()
            for operation in grant.operations:
                found.add(Acl(entry.principal, kind, name, pattern, operation, entry.host))
    return sorted(found)


def plan_acls(declared: Iterable[PrincipalAcls], current: Iterable[Acl]) -> list[AclChange]:
    """Adds, unchanged rules and removals (rules on the cluster the file does not declare)."""
    wanted = declared_acls(declared)
    have = set(current)
    changes = [AclChange(acl, "unchanged" if acl in have else "add") for acl in wanted]
    changes += [AclChange(acl, "remove") for acl in sorted(have - set(wanted))]
    return changes


_KAFKA_TYPES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,  # librdkafka's name for the cluster resource
}
_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}


def _binding(acl: Acl) -> AclBinding:
    return AclBinding(
        _KAFKA_TYPES[acl.resource_type],
        acl.name,
        _PATTERNS[acl.pattern],
        acl.principal,
        acl.host,
        AclOperation[acl.operation.upper()],
        AclPermissionType.ALLOW,
    )


def _from_binding(binding: AclBinding) -> Acl | None:
    kinds = {v: k for k, v in _KAFKA_TYPES.items()}
    patterns = {v: k for k, v in _PATTERNS.items()}
    if binding.permission_type != AclPermissionType.ALLOW:
        return None  # DENY rules are not declared here: left alone
    if binding.restype not in kinds or binding.resource_pattern_type not in patterns:
        return None
    return Acl(
        binding.principal,
        kinds[binding.restype],
        binding.name,
        patterns[binding.resource_pattern_type],
        AclOperation(binding.operation).name.lower(),
        binding.host,
    )


def _error(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return f"{err.name()}: {err.str()}" if hasattr(err, "name") else str(err)
    return str(exc) or exc.__class__.__name__


def describe_acls(admin: AdminClient) -> list[Acl]:
    """Every ALLOW rule on the cluster (raises :class:`TopicsAdminError` without an authorizer)."""
    any_: Any = None  # librdkafka's "any name/principal/host" (the stubs only allow str)
    everything = AclBindingFilter(
        ResourceType.ANY,
        any_,
        ResourcePatternType.ANY,
        any_,
        any_,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        bindings = admin.describe_acls(everything, request_timeout=_TIMEOUT).result(timeout=_TIMEOUT)
    except (KafkaException, FutureTimeout) as exc:
        raise TopicsAdminError(
            f"cannot read ACLs ({_error(exc)}); the file declares acls, so the cluster needs an "
            "authorizer and this principal needs DESCRIBE on the cluster"
        ) from exc
    return sorted(acl for acl in map(_from_binding, bindings) if acl is not None)


def apply_acl_changes(admin: AdminClient, changes: Iterable[AclChange], *, delete: bool) -> int:
    """Create the ``add`` rules; delete the ``remove`` ones only when ``delete``. Returns rules changed."""
    changes = list(changes)
    adds = [_binding(c.acl) for c in changes if c.action == "add"]
    removes = [c.acl for c in changes if c.action == "remove"] if delete else []
    failures = []
    if adds:
        for binding, future in admin.create_acls(adds, request_timeout=_TIMEOUT).items():
            try:
                future.result(timeout=_TIMEOUT)
            except (KafkaException, FutureTimeout) as exc:
                failures.append(f"add ACL {_from_binding(binding) or binding}: {_error(exc)}")
    if removes:
        filters = [
            AclBindingFilter(
                _KAFKA_TYPES[a.resource_type],
                a.name,
                _PATTERNS[a.pattern],
                a.principal,
                a.host,
                AclOperation[a.operation.upper()],
                AclPermissionType.ALLOW,
            )
            for a in removes
        ]
        for flt, future in admin.delete_acls(filters, request_timeout=_TIMEOUT).items():
            try:
                future.result(timeout=_TIMEOUT)
            except (KafkaException, FutureTimeout) as exc:
                failures.append(f"remove ACL {flt}: {_error(exc)}")
    if failures:
        raise TopicsAdminError("; ".join(failures))
    return len(adds) + len(removes)
