"""Testing seams for evstream users: a pytest plugin with a real embedded stack (``evstream_stack``)."""

from evstream.testing.plugin import StackEndpoints

__all__ = ["StackEndpoints"]
