"""Topics as code: declare topics in YAML, diff them against the cluster, apply idempotently."""

from evstream.topics.admin import apply_changes, describe_topics, list_topics
from evstream.topics.plan import ClusterTopic, ConfigChange, TopicChange, plan_changes
from evstream.topics.spec import TopicsFile, TopicSpec, load_topics_file

__all__ = [
    "ClusterTopic",
    "ConfigChange",
    "TopicChange",
    "TopicSpec",
    "TopicsFile",
    "apply_changes",
    "describe_topics",
    "list_topics",
    "load_topics_file",
    "plan_changes",
]
