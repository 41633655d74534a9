"""Turns the OpenAPI document into what the ``/docs`` template shows (no JS, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TAG_ORDER = ("v2", "v1", "events", "service", "web")


@dataclass
class Field:
    name: str
    type: str
    required: bool
    description: str


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    description: str
    bodies: list[tuple[str, str]]  # (content type, schema name)
    responses: list[tuple[str, str, str]]  # (status, description, schema name)
    api_key: bool


@dataclass
class Section:
    tag: str
    description: str
    operations: list[Operation] = field(default_factory=list)


def type_of(schema: dict[str, Any]) -> str:
    """A short human label: ``string``, ``array of MatchV2``, ``integer | null``..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(type_of(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {type_of(schema['additionalProperties'])}"
    if "enum" in schema:
        return " | ".join(f'"{v}"' for v in schema["enum"])
    if schema.get("format") == "binary":
        return "file"
    return str(kind)


def fields_of(schema: dict[str, Any]) -> list[Field]:
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        desc = prop.get("description", "")
        if "anyOf" in prop:
            desc = desc or next((s.get("description", "") for s in prop["anyOf"] if s.get("description")), "")
        out.append(Field(name, type_of(prop), name in required, desc))
    return out


def _schema_name(content: dict[str, Any]) -> str:
    schema = content.get("schema", {})
    return type_of(schema)


def sections(spec: dict[str, Any]) -> list[Section]:
    tags = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    by_tag: dict[str, Section] = {}
    responses = spec["components"].get("responses", {})
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            section = by_tag.setdefault(tag, Section(tag, tags.get(tag, "")))
            bodies = [(ct, _schema_name(c)) for ct, c in op.get("requestBody", {}).get("content", {}).items()]
            rows = []
            for status, resp in op["responses"].items():
                if "$ref" in resp:
                    resp = responses[resp["$ref"].rsplit("/", 1)[-1]]
                content = next(iter(resp.get("content", {}).values()), {})
                rows.append((status, resp.get("description", ""), _schema_name(content) if content else ""))
            section.operations.append(Operation(
                method.upper(), path, op.get("summary", ""), op.get("description", ""), bodies, rows,
                api_key=bool(op.get("security")),
            ))
    order = {t: i for i, t in enumerate(TAG_ORDER)}
    return sorted(by_tag.values(), key=lambda s: order.get(s.tag, len(order)))


def schemas(spec: dict[str, Any]) -> list[tuple[str, str, list[Field]]]:
    out = []
    for name, schema in spec["components"]["schemas"].items():
        out.append((name, schema.get("description", ""), fields_of(schema)))
    return out
