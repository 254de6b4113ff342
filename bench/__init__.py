"""Benchmarks (not tests): ratio tables against raw confluent-kafka and Kafka's perf tools."""
