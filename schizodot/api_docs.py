"""docs/api.md, generated from the OpenAPI schemas of the ingest and results APIs.

The apps are built as their composition roots build them (the patient page's API
mounted on ingest, dosing reviews on results), with in-memory adapters: making
the schema calls no route, so no adapter is ever used. The clinician console and
the patient page's HTML are left out of the schemas by the routers themselves.
Settings are their defaults (`model_construct`: the environment is not read), so
the page is the same on every machine.

    python -m schizodot.api_docs            # rewrite docs/api.md
    python -m schizodot.api_docs --check    # exit 1 when docs/api.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
METHODS = ("get", "post", "put", "patch", "delete")
DOCS_ONLY_KEY = "api-docs-generation-only"  # the audit trail's pseudonym key; nothing is ever recorded


def ingest_schema() -> dict[str, Any]:
    from services.ingest.api import IngestAccess, PatientPage, create_app
    from services.ingest.patient import MultipartPolicy, S3MultipartStore, ScriptCatalog, create_patient_router, open_paths
    from services.ingest.settings import CheckinLimits, UploadPolicy
    from shared.audit import AuditTrail
    from shared.auth import Authenticator, AuthSettings, principal_dependency
    from shared.fakes import FakeAdapters, InMemoryApiKeys, InMemoryPatientLinks, MemoryAuditStore
    from shared.ratelimit import MemoryRateLimiter

    fakes, links = FakeAdapters(), InMemoryPatientLinks()
    authenticator = Authenticator(AuthSettings.model_construct(), InMemoryApiKeys(), links)
    audit = AuditTrail(MemoryAuditStore(), DOCS_ONLY_KEY, "schizodot-ingest")
    router = create_patient_router(
        principal=principal_dependency(authenticator), jobs=fakes.jobs,
        store=S3MultipartStore(s3=None, signer=None, bucket="docs"), scripts=ScriptCatalog(),
        policy=MultipartPolicy(max_bytes=UploadPolicy.model_construct().max_upload_bytes), upload_origin="https://uploads.example",
        links=links, audit=audit)

    async def enqueue(body: str) -> str:
        raise AssertionError("never called: only the schema is made")

    app = create_app(UploadPolicy.model_construct(), fakes.jobs, fakes.storage.presigned_post,
                     IngestAccess(authenticator, audit, MemoryRateLimiter(), links, CheckinLimits.model_construct()),
                     enqueue_event=enqueue, patient_page=PatientPage(router, *open_paths()))
    return app.openapi()


def results_schema() -> dict[str, Any]:
    from services.results.api import ResultsAccess, create_app
    from services.results.dosing import DosingReviews
    from services.results.settings import ResultsSettings
    from shared.audit import AuditTrail
    from shared.auth import Authenticator, AuthSettings
    from shared.fakes import FakeAdapters, InMemoryApiKeys, InMemoryPatientLinks, MemoryAuditStore

    fakes, api_keys = FakeAdapters(), InMemoryApiKeys()
    audit = AuditTrail(MemoryAuditStore(), DOCS_ONLY_KEY, "schizodot-results")

    async def enqueue(body: str) -> str:
        raise AssertionError("never called: only the schema is made")

    access = ResultsAccess(Authenticator(AuthSettings.model_construct(), api_keys, InMemoryPatientLinks()), audit, api_keys,
                           erasures=None, enqueue_erasure=enqueue)  # type: ignore[arg-type]  # never called
    reviews = DosingReviews(fakes.jobs, fakes.history, fakes.history, audit)  # type: ignore[arg-type]
    return create_app(ResultsSettings.model_construct(), fakes.jobs, fakes.history, access, reviews=reviews).openapi()


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: `string`, `integer (1..100)`, `[Model](#model)`, `list of string`."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{name.lower()})"
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            parts = [_type(part) for part in schema[combinator]]
            return " or ".join(dict.fromkeys(parts))
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    bounds = [f"{word} {schema[key]}" for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"),
                                                       ("maxLength", "length ≤"), ("pattern", "pattern"))
              if key in schema]
    text = "null" if kind == "null" else kind
    return f"{text} ({', '.join(str(b) for b in bounds)})" if bounds else text


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _route(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | required | type | description |", "|---|---|---|---|---|"]
        for parameter in parameters:
            lines.append(f"| `{parameter['name']}` | {parameter['in']} | {'yes' if parameter.get('required') else 'no'} "
                         f"| {_cell(_type(parameter.get('schema', {})))} | {_cell(parameter.get('description', ''))} |")
        lines.append("")
    body = operation.get("requestBody")
    if body:
        for media, content in sorted(body.get("content", {}).items()):
            lines += [f"Body ({media}{', required' if body.get('required') else ''}): "
                      f"{_type(content.get('schema', {}))}", ""]
    responses = operation.get("responses", {})
    if responses:
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for status, response in sorted(responses.items()):
            schemas = [c.get("schema", {}) for c in response.get("content", {}).values()]
            shown = _type(schemas[0]) if schemas and schemas[0] else ""
            lines.append(f"| {status} | {_cell(response.get('description', ''))} | {_cell(shown)} |")
        lines.append("")
    return lines


def _model(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"#### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | required | type | description |", "|---|---|---|---|"]
        for field, spec in properties.items():
            lines.append(f"| `{field}` | {'yes' if field in required else 'no'} | {_cell(_type(spec))} "
                         f"| {_cell(spec.get('description', spec.get('title', '')))} |")
        lines.append("")
    elif schema:
        lines += [f"Type: {_type(schema)}", ""]
    return lines


def render(schemas: list[dict[str, Any]]) -> str:
    lines = ["# API reference", "",
             "Generated from the services' OpenAPI schemas by `python -m schizodot.api_docs`; do not edit by hand "
             "(`tests/unit/test_api_docs.py` fails when this file is stale). What the routes mean for a clinic app "
             "or an EHR, with examples: [integration.md](integration.md); credentials and roles: "
             "[security.md](security.md). A running service serves the same schema at `/openapi.json` and "
             "`/docs`.", ""]
    for schema in schemas:
        info = schema["info"]
        lines += [f"## {info['title']} (version {info['version']})", "", info.get("description", "").strip(), ""]
        for path, item in schema["paths"].items():
            for method in METHODS:
                if method in item:
                    lines += _route(path, method, item[method])
        models = schema.get("components", {}).get("schemas", {})
        if models:
            lines += [f"### Models of the {info['title']}", ""]
            for name in sorted(models):
                lines += _model(name, models[name])
    return "\n".join(lines).rstrip() + "\n"


def generate() -> str:
    return render([ingest_schema(), results_schema()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api.md differs from the schemas")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print("docs/api.md is stale: run `python -m schizodot.api_docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
