"""The JSON Schemas of every command's ``--json`` output (``schemas/cli/``), and the check that a
real output is valid *and* holds no field its schema does not describe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
CLI_SCHEMAS = REPO / "schemas" / "cli"


def _registry() -> Registry:
    resources = []
    for path in sorted(CLI_SCHEMAS.glob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def schema_of(command: str) -> dict[str, Any]:
    return json.loads((CLI_SCHEMAS / f"{command}.json").read_text())


def undocumented(instance: Any, schema: dict[str, Any], resolver: Any, where: str = "$") -> list[str]:
    """Paths of object members that ``schema`` does not describe (through $ref, oneOf/anyOf
    branches that match, properties, additionalProperties, items)."""
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            for branch in schema[keyword]:
                candidate = {"$schema": "https://json-schema.org/draft/2020-12/schema", **branch}
                validator = Draft202012Validator(candidate, registry=REGISTRY, _resolver=resolver)
                if validator.is_valid(instance):
                    return undocumented(instance, branch, resolver, where)
    found: list[str] = []
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if key in properties:
                found += undocumented(value, properties[key], resolver, f"{where}.{key}")
            elif isinstance(extra, dict):
                found += undocumented(value, extra, resolver, f"{where}[{key!r}]")
            elif properties or extra is not None:
                found.append(f"{where}.{key}")
            # an object schema without properties ("type": "object" alone) is free-form
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            found += undocumented(item, schema["items"], resolver, f"{where}[{index}]")
    return found


def check(command: str, document: Any) -> None:
    """``document`` is valid against ``command``'s schema and every member of it is described."""
    schema = schema_of(command)
    validator = Draft202012Validator(schema, registry=REGISTRY)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, f"{command}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    resolver = REGISTRY.resolver(base_uri=schema["$id"])
    missing = undocumented(document, schema, resolver)
    assert not missing, f"{command} --json has fields its schema does not describe: {missing}"
