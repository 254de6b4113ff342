"""The local Kafka (KRaft) + Apicurio Registry stack, run as JVM processes without Docker."""

from evstream.stack.jars import cache_dir, deploy_dir, resolve_kafka, resolve_registry
from evstream.stack.java import find_java, java_version
from evstream.stack.manager import LocalStack, ProcessStatus, default_data_dir
from evstream.stack.state import NodeState, RegistryState, StackState

__all__ = [
    "LocalStack",
    "NodeState",
    "ProcessStatus",
    "RegistryState",
    "StackState",
    "cache_dir",
    "default_data_dir",
    "deploy_dir",
    "find_java",
    "java_version",
    "resolve_kafka",
    "resolve_registry",
]
