"""docs/api.md is the services' OpenAPI schemas, rendered: a route, parameter or
model changed without regenerating it fails here."""

from __future__ import annotations

from schizodot import api_docs


def test_docs_api_md_matches_the_openapi_schemas_of_both_apis():
    stored = api_docs.DOC.read_text(encoding="utf-8")
    assert stored == api_docs.generate(), "docs/api.md is stale: run `python -m schizodot.api_docs`"


def test_the_reference_covers_every_route_of_both_schemas():
    schemas = [api_docs.ingest_schema(), api_docs.results_schema()]
    text = api_docs.render(schemas)
    routes = [(method, path) for schema in schemas for path, item in schema["paths"].items()
              for method in api_docs.METHODS if method in item]
    assert ("post", "/api/v1/analyze") in routes and ("delete", "/api/v1/patients/{patient_id}") in routes
    assert ("post", "/api/v1/checkin/upload") in routes  # the patient page's API is mounted
    for method, path in routes:
        assert f"### `{method.upper()} {path}`" in text
