"""Offline checks of rendered manifests, run with the deploy tools venv (deploy/validate-env.sh).

    python deploy/tools/manifests.py to-json FILE...
        Print every YAML document of the files as one JSON list (so callers need no YAML library).

    python deploy/tools/manifests.py validate-crs --crd-dir DIR FILE...
        Validate every custom resource (any kind outside the built-in Kubernetes API groups)
        against ``spec.versions[].schema.openAPIV3Schema`` of the CRDs in DIR. A custom kind or
        version with no schema there is an error, never a pass. Built-in kinds are left to
        kubernetes-validate. Prints a JSON report; exits 1 if anything failed.

The CRD schema is turned into a JSON Schema (draft 4, which OpenAPI v3 schemas follow) with the
API server's semantics:

* ``x-kubernetes-int-or-string: true``  -> integer or string;
* ``nullable: true``                     -> null is accepted as well;
* ``x-kubernetes-preserve-unknown-fields: true`` -> unknown fields accepted at that level;
* otherwise an object schema rejects fields it does not declare, as the API server's strict
  field validation (kubectl's default) does. This applies only to the structural part of the
  schema: branches of ``oneOf``/``anyOf``/``allOf``/``not`` only constrain values.

Not evaluated: ``x-kubernetes-validations`` (CEL rules) and defaults; tests/deploy re-checks
the one CEL rule of the KEDA CRD (minReplicaCount <= maxReplicaCount) in Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# What the API server checks of metadata for any kind (a subset of ObjectMeta).
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_LOGICAL = ("oneOf", "anyOf", "allOf")


def load_documents(paths: list[str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            docs.extend(d for d in yaml.safe_load_all(stream) if d is not None)
    return docs


def is_builtin(api_version: str) -> bool:
    """Core ("v1"), un-dotted groups (apps, batch, policy, autoscaling) and *.k8s.io groups."""
    if "/" not in api_version:
        return True
    group = api_version.split("/", 1)[0]
    return "." not in group or group.endswith(".k8s.io")


def to_json_schema(schema: dict[str, Any], structural: bool = True) -> dict[str, Any]:
    """An OpenAPI v3 CRD schema as a JSON Schema with the API server's field semantics."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if "properties" in schema:
        out["properties"] = {k: to_json_schema(v, structural) for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        out["items"] = to_json_schema(schema["items"], structural)
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(schema["additionalProperties"], structural)
    for key in _LOGICAL:
        if key in schema:
            out[key] = [to_json_schema(s, structural=False) for s in schema[key]]
    if "not" in schema:
        out["not"] = to_json_schema(schema["not"], structural=False)
    if (
        structural
        and schema.get("type") == "object"
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if schema.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> JSON Schema of every served version of every CRD in crd_dir."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.y*ml")):
        with open(path, encoding="utf-8") as stream:
            for crd in yaml.safe_load_all(stream):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    openapi = (version.get("schema") or {}).get("openAPIV3Schema")
                    if not version.get("served", True) or not openapi:
                        continue
                    schema = to_json_schema(openapi)
                    schema.setdefault("properties", {})["metadata"] = _METADATA
                    schema["required"] = sorted({*schema.get("required", []), "metadata"})
                    schemas[(group, version["name"], kind)] = schema
    return schemas


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def validate_custom_resources(docs: list[dict[str, Any]], crd_dir: Path) -> list[dict[str, Any]]:
    schemas = load_crd_schemas(crd_dir)
    report = []
    for index, doc in enumerate(docs):
        api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        if is_builtin(api_version):
            continue
        name = (doc.get("metadata") or {}).get("name", "?")
        group, _, version = api_version.partition("/")
        schema = schemas.get((group, version, kind))
        if schema is None:
            known = sorted(f"{g}/{v} {k}" for g, v, k in schemas if k == kind or g == group)
            errors = [f"no CRD schema for {api_version} {kind} in {crd_dir} (have: {known or 'none'})"]
        else:
            validator = Draft4Validator(schema)
            errors = [
                f"{_where(e)}: {e.message[:400]}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
            ]
        report.append({"index": index, "apiVersion": api_version, "kind": kind, "name": name, "errors": errors})
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_json = commands.add_parser("to-json")
    to_json.add_argument("files", nargs="+")
    crs = commands.add_parser("validate-crs")
    crs.add_argument("--crd-dir", required=True, type=Path)
    crs.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    docs = load_documents(args.files)
    if args.command == "to-json":
        json.dump(docs, sys.stdout)
        return 0
    if not args.crd_dir.is_dir():
        print(json.dumps({"error": f"CRD directory {args.crd_dir} not found"}))
        return 2
    report = validate_custom_resources(docs, args.crd_dir)
    json.dump({"checked": len(report), "resources": report}, sys.stdout, indent=1)
    print()
    return 1 if any(r["errors"] for r in report) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
