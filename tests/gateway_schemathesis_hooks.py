"""Schemathesis hooks for the gateway contract test (loaded through ``SCHEMATHESIS_HOOKS``).

The gateway's integer fields take integer literals only (``5``, never ``5.0`` or ``5e0``: no
float is coerced into an integer, issue 13). JSON Schema's ``integer`` cannot say so — ``5.0``
is an integer to it — and the served document says it in each field's description instead. For
data generated as *valid*, this hook writes integral numbers the way the document describes them:
as literals. Negative data is left alone, so a fraction where an integer belongs is still sent,
and must still be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation


def _literal_integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {key: _literal_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_literal_integers(item) for item in value]
    return value


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case._meta
    if meta is not None and not meta.is_negative_at(ParameterLocation.BODY) and case.body is not None:
        case.body = _literal_integers(case.body)
    return case
