"""The stack's ports lie outside the ephemeral range, so no client's outgoing connection takes one
while a node is down (a node could not start again: PortInUseError)."""

from __future__ import annotations

import socket

import pytest

from evstream.stack.processes import LOOPBACK, ephemeral_range, free_ports

pytestmark = pytest.mark.unit


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    assert 1024 < low <= high
    ports = free_ports(40, exclude=[])
    assert len(set(ports)) == 40
    assert all(1024 <= p < low for p in ports), (low, sorted(ports))
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, port))  # free: raises if not


def test_excluded_and_taken_ports_are_skipped() -> None:
    first = free_ports(1)[0]
    with socket.socket() as holder:
        holder.bind((LOOPBACK, first))
        holder.listen()
        again = free_ports(200, exclude=[first + 1])
    assert first not in again
    assert first + 1 not in again
