"""Arguments against a tool's JSON schema: the small subset tools declare, with messages a policy can act on.

    problems({"query": 3}, SearchTool.parameters)   # ["'query' must be a string, got 3"]

Supported keywords: ``type`` (a name or a list of names), ``properties``, ``required``,
``additionalProperties: false``, ``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``items``.
Other keywords are ignored (a tool that needs them validates inside ``execute``). As in JSON Schema, a boolean
is not an integer and a float with no fraction is one.
"""

from __future__ import annotations

import json
from typing import Any

TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a list",
    "null": "null",
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(
        value, {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}.get(kind, object)
    )


def shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def problems(value: Any, schema: dict, where: str = "") -> list[str]:
    """What is wrong with ``value`` under ``schema`` (empty: nothing), each naming the argument."""
    name = f"'{where}'" if where else "the arguments"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, k) for k in kinds):
            return [f"{name} must be {' or '.join(TYPES.get(k, k) for k in kinds)}, got {shown(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{name} must be one of {', '.join(shown(v) for v in schema['enum'])}, got {shown(value)}"]
    out = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{name} must be at least {schema['minimum']}, got {shown(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{name} must be at most {schema['maximum']}, got {shown(value)}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{name} must have at least {schema['minLength']} characters, got {len(value)}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{name} must have at most {schema['maxLength']:,} characters, got {len(value):,}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += problems(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"missing required argument '{key}'")
        if schema.get("additionalProperties") is False:
            for key in value:
                if key not in properties:
                    out.append(f"unknown argument '{key}' (known: {', '.join(properties) or 'none'})")
        for key, sub in properties.items():
            if key in value:
                out += problems(value[key], sub, f"{where}.{key}" if where else key)
    return out


def signature(schema: dict) -> str:
    """``doc (string, required), page (integer)``: the parameters in one line, for messages."""
    required = set(schema.get("required", []))
    parts = []
    for key, sub in schema.get("properties", {}).items():
        kind = sub.get("type", "any")
        kind = kind if isinstance(kind, str) else " | ".join(kind)
        parts.append(f"{key} ({kind}{', required' if key in required else ''})")
    return ", ".join(parts) or "no arguments"
