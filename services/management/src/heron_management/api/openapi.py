"""The OpenAPI document: FastAPI's, plus the problem responses every operation can give."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from heron_management.api.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem

_ALWAYS = {"400": "malformed request", "500": "unexpected server error"}
_AUTHENTICATED = {
    "401": "no valid API token",
    "403": "the caller's role may not do this",
    "404": "no such object in this account",
}
_CHANGING = {"409": "conflicts with existing state"}
_WITH_BODY = {
    "413": "body too large",
    "422": "the body breaks the model's rules",
}


def build_openapi(app: FastAPI, *, version: str) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title="Heron management API",
        version=version,
        description=(
            "Accounts, users, API tokens, peers, networks and services of a Heron installation. "
            "Authenticate with `Authorization: Token <API token>`. Errors are RFC 9457 problem "
            "details (`application/problem+json`)."
        ),
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for model in (FieldError, Problem):
        components[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            extra = dict(_ALWAYS)
            if path.startswith("/api/"):
                extra |= _AUTHENTICATED
                operation["security"] = [{"ApiToken": []}]
            if path.startswith("/api/") and method != "get":
                extra |= _CHANGING
            if "requestBody" in operation:
                extra |= _WITH_BODY
            if "parameters" in operation or path.startswith("/api/"):
                extra.setdefault("422", "a parameter breaks the rules")
            for code, description in extra.items():
                responses.setdefault(code, _problem(description))
    app.openapi_schema = schema
    return schema


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
