"""The topics declaration file (YAML): what topics should exist and how they are configured.

.. code-block:: yaml

    topics:
      - name: orders
        partitions: 6
        replication_factor: 3      # optional: the broker's default.replication.factor
        retention_ms: 604800000    # optional: retention.ms
        cleanup_policy: delete     # optional: delete | compact | compact,delete
        configs:                   # optional: any other topic config, by Kafka's name
          min.insync.replicas: 2
    acls:                          # optional: ACLs as code (see evstream.topics.acls)
      - principal: User:app
        allow:
          - {topic: orders, operations: [write, describe]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evstream.errors import TopicsFileError
from evstream.topics.acls import PrincipalAcls

__all__ = ["TopicSpec", "TopicsFile", "load_topics_file"]

_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


class TopicSpec(BaseModel):
    """One declared topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    partitions: int = Field(ge=1, le=100_000)
    replication_factor: int | None = Field(default=None, ge=1, le=32)
    retention_ms: int | None = Field(default=None, ge=-1)
    cleanup_policy: Literal["delete", "compact", "compact,delete", "delete,compact"] | None = None
    configs: dict[str, str] = Field(default_factory=dict)

    @field_validator("configs", mode="before")
    @classmethod
    def _stringify(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _no_double_settings(self) -> TopicSpec:
        for key, field in (("retention.ms", "retention_ms"), ("cleanup.policy", "cleanup_policy")):
            if key in self.configs and getattr(self, field) is not None:
                raise ValueError(f"{key} is set twice: as {field} and under configs")
        return self

    def desired_configs(self) -> dict[str, str]:
        """Every topic config this declaration pins, in Kafka's spelling."""
        configs = dict(self.configs)
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        if self.cleanup_policy is not None:
            configs["cleanup.policy"] = self.cleanup_policy
        return configs


class TopicsFile(BaseModel):
    """The whole declaration: a list of topics with unique names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topics: tuple[TopicSpec, ...]
    #: None: the file does not manage ACLs. A list (even empty): every ALLOW ACL on the cluster is managed.
    acls: tuple[PrincipalAcls, ...] | None = None

    @model_validator(mode="after")
    def _unique(self) -> TopicsFile:
        seen: set[str] = set()
        for topic in self.topics:
            if topic.name in seen:
                raise ValueError(f"topic {topic.name!r} is declared twice")
            seen.add(topic.name)
        return self


def _describe(error: ValidationError, topics: list[object]) -> str:
    errors = error.errors()
    # A misspelt key usually also leaves a required one missing: the misspelling is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = list(first["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "topics" and isinstance(loc[1], int):
        entry = topics[loc[1]] if loc[1] < len(topics) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"topic {name!r}" if name else f"topics[{loc[1]}]"
        loc = loc[2:]
    field = ".".join(str(part) for part in loc)
    if first["type"] == "extra_forbidden":
        message = f"unknown key {field!r}"
    else:
        message = f"{field}: {first['msg']}" if field else first["msg"]
    return f"{where}: {message}" if where else message


def load_topics_file(path: Path) -> TopicsFile:
    """Read and validate a declaration; errors are one line naming the topic and key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise TopicsFileError(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise TopicsFileError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise TopicsFileError(f"{path}: expected a mapping with a 'topics' list")
    try:
        return TopicsFile.model_validate(raw)
    except ValidationError as exc:
        topics = raw.get("topics")
        raise TopicsFileError(
            f"{path}: {_describe(exc, topics if isinstance(topics, list) else [])}"
        ) from exc
