"""What an event's Avro schema adds to its model, for the gateway's answers and its OpenAPI document.

A model may accept values its Avro schema cannot hold (an ``int`` beyond a 64-bit ``long``, a
string with a lone surrogate). :func:`unfit` finds the first such value and its location, so a
422 says where and why without echoing the codec's internals; :func:`bound_integers` writes the
Avro integer ranges into the models' JSON schemas, so the document says what is served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["INTEGER_RANGES", "bound_integers", "explicit_patterns", "records", "unfit"]

INTEGER_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
"""The Avro integer types and their inclusive ranges."""

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def records(schema: Any, namespace: str = "") -> Iterator[dict[str, Any]]:
    """Every named record defined in ``schema`` (depth first), with ``"fullname"`` resolved."""
    if isinstance(schema, list):
        for branch in schema:
            yield from records(branch, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            name = str(schema["name"])
            space = str(schema.get("namespace", namespace)) if "." not in name else name.rsplit(".", 1)[0]
            yield {**schema, "fullname": name if "." in name else f"{space}.{name}" if space else name}
            for field in schema.get("fields", []):
                yield from records(field["type"], space)
        elif kind == "array":
            yield from records(schema["items"], namespace)
        elif kind == "map":
            yield from records(schema["values"], namespace)
        elif isinstance(kind, dict | list):
            yield from records(kind, namespace)


def _named(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for record in records(schema):
        found[record["fullname"]] = record
        found[record["fullname"].rsplit(".", 1)[-1]] = record
    return found


def unfit(schema: dict[str, Any], value: Any) -> tuple[list[str | int], str] | None:
    """The location and reason of the first value in ``value`` (a model dump) that ``schema``
    cannot encode, or None when none is found."""
    return _unfit(schema, value, [], _named(schema))


def _unfit(
    schema: Any, value: Any, loc: list[str | int], named: dict[str, dict[str, Any]]
) -> tuple[list[str | int], str] | None:
    schema = _resolve(schema, named)
    if isinstance(schema, list):  # a union: the branch of the value's kind decides
        branch = next((b for b in schema if _kind(_resolve(b, named)) in _KINDS[_of(value)]), None)
        return None if branch is None else _unfit(branch, value, loc, named)
    kind = _kind(schema)
    if isinstance(schema, dict) and isinstance(schema["type"], dict | list):
        return _unfit(schema["type"], value, loc, named)
    children: list[tuple[Any, Any, str | int]] = []
    if kind == "record" and isinstance(value, dict):
        children = [(f["type"], value.get(f["name"]), f["name"]) for f in schema.get("fields", [])]
    elif kind == "array" and isinstance(value, list):
        children = [(schema["items"], item, n) for n, item in enumerate(value)]
    elif kind == "map" and isinstance(value, dict):
        children = [(schema["values"], item, key) for key, item in value.items()]
    else:
        reason = _leaf(kind, value)
        return None if reason is None else (loc, reason)
    for child_schema, child, step in children:
        found = _unfit(child_schema, child, [*loc, step], named)
        if found is not None:
            return found
    return None


def _leaf(kind: str, value: Any) -> str | None:
    if kind in INTEGER_RANGES and _of(value) == "int":
        low, high = INTEGER_RANGES[kind]
        if not low <= value <= high:
            return f"Input should be between {low} and {high} (Avro {kind})"
    elif kind == "string" and isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Input should be a string encodable as UTF-8 (no lone surrogates)"
    return None


_KINDS = {
    "null": {"null"},
    "bool": {"boolean"},
    "int": set(INTEGER_RANGES),
    "str": {"string", "enum"},
    "dict": {"record", "map"},
    "list": {"array"},
    "other": set(),
}


def _of(value: Any) -> str:
    if value is None:
        return "null"
    for kind, types in (("bool", bool), ("int", int), ("str", str), ("dict", dict), ("list", list)):
        if isinstance(value, types):
            return kind
    return "other"


def _resolve(schema: Any, named: dict[str, dict[str, Any]]) -> Any:
    return named.get(schema, schema) if isinstance(schema, str) and schema not in _PRIMITIVES else schema


def _kind(schema: Any) -> str:
    kind = schema.get("type") if isinstance(schema, dict) else schema
    return kind if isinstance(kind, str) else "union"


def bound_integers(defs: dict[str, dict[str, Any]], avro_schemas: list[dict[str, Any]]) -> None:
    """Add each Avro integer's range to the matching JSON-schema integers of ``defs`` (the models'
    JSON schemas by name), narrowing bounds the model already has. Records match by name."""
    by_name: dict[str, dict[str, Any]] = {}
    for schema in avro_schemas:
        by_name.update(_named(schema))
    for name, definition in defs.items():
        record = by_name.get(name)
        if record is None or "properties" not in definition:
            continue
        fields = {f["name"]: f["type"] for f in record.get("fields", [])}
        for prop, prop_schema in definition["properties"].items():
            if prop in fields:
                _bound(prop_schema, fields[prop], by_name)


def _bound(js: dict[str, Any], avro: Any, named: dict[str, dict[str, Any]]) -> None:
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            return
        avro = branches[0]
    if isinstance(avro, str) and avro not in _PRIMITIVES:
        return  # a named type: its own definition is bounded by name
    kind = avro.get("type") if isinstance(avro, dict) else avro
    if isinstance(avro, dict) and "logicalType" in avro:
        return
    for branch in js.get("anyOf", []):
        _bound(branch, avro, named)
    if kind in INTEGER_RANGES and js.get("type") == "integer":
        low, high = INTEGER_RANGES[kind]
        js["minimum"] = max(js.get("minimum", low), low)
        js["maximum"] = min(js.get("maximum", high), high)
        if "exclusiveMinimum" in js and js["exclusiveMinimum"] < low:
            del js["exclusiveMinimum"]
        if "exclusiveMaximum" in js and js["exclusiveMaximum"] > high:
            del js["exclusiveMaximum"]
        # JSON Schema's integer includes 5.0 and 5e0; the strict models take literals only
        note = f"An integer literal (no fraction or exponent: 5, not 5.0) within Avro {kind}."
        js["description"] = f"{js['description']} {note}" if js.get("description") else note
    elif kind == "array" and isinstance(avro, dict) and isinstance(js.get("items"), dict):
        _bound(js["items"], avro["items"], named)
    elif kind == "map" and isinstance(avro, dict) and isinstance(js.get("additionalProperties"), dict):
        _bound(js["additionalProperties"], avro["values"], named)


_WHITE_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Unicode White_Space: what ``\\s`` means to pydantic's (Rust) regex engine. ECMA-262 and Python
mean other sets, so the document spells it out."""


def explicit_patterns(schema: Any) -> None:
    """Rewrite ``\\s`` in every ``pattern`` of ``schema`` (in place) as the class the server
    matches, so that clients and fuzzers reading the document agree with the validation."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                schema[key] = _spell_out(value)
            else:
                explicit_patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            explicit_patterns(item)


def _spell_out(pattern: str) -> str:
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append(
                _WHITE_SPACE if pair == "\\s" and in_class else f"[{_WHITE_SPACE}]" if pair == "\\s" else pair
            )
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)
