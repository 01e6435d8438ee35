"""The OpenAPI document of the JSON API (hydra/web/openapi.py): every RPC of every
public service has its path, the schemas follow proto3's JSON mapping, the
proto's comments are there, and the document is structurally valid OpenAPI 3.0
(checked here by walking it: no validator is installed, and none is added)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

import hydra.v1
from hydra.web.endpoints import endpoints
from hydra.web.openapi import Schemas, document

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: The keywords of an OpenAPI 3.0 Schema Object (its JSON Schema subset and its own).
SCHEMA_KEYS = {
    "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "maxProperties", "minProperties", "required", "enum", "type", "allOf", "oneOf", "anyOf",
    "not", "items", "properties", "additionalProperties", "description", "format", "default",
    "nullable", "discriminator", "readOnly", "writeOnly", "xml", "externalDocs", "example",
    "deprecated", "$ref",
}  # fmt: skip
SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document(endpoints())


def _public_methods() -> Iterator[tuple[str, str, bool]]:
    """(service, method, streams to the client) of every RPC of hydra.v1 an HTTP
    client can call: all but those streaming from the client (the agents' Connect)."""
    for info in pkgutil.iter_modules(hydra.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"hydra.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if not method.client_streaming:
                    yield service.name, method.name, method.server_streaming


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_rpc_of_every_public_service_has_its_path(doc: dict[str, Any]) -> None:
    expected = list(_public_methods())
    assert (
        len(expected) >= 23
    )  # Task 6, Run 9, Agent 2, Cluster 1, Audit 1, Notification 1, Credential 3
    paths_of = {}
    for path, _method, operation in _operations(doc):
        paths_of.setdefault(operation["operationId"].rsplit("_", 1)[0], set()).add(path)
    for service, method, _streams in expected:
        assert f"{service}_{method}" in paths_of, f"{service}.{method} has no path"
    assert len(paths_of) == len(expected)
    assert "AgentService_Connect" not in paths_of
    assert paths_of["RunService_Trigger"] == {"/runs:trigger"}
    assert paths_of["RunService_TailLogs"] == {"/runs:tailLogs"}
    assert paths_of["TaskService_Apply"] == {"/tasks:apply"}
    assert paths_of["ClusterService_Status"] == {"/cluster:status"}


def test_reads_take_get_and_post_and_changes_post_only(doc: dict[str, Any]) -> None:
    assert set(doc["paths"]["/runs:trigger"]) == {"post"}
    assert set(doc["paths"]["/tasks:apply"]) == {"post"}
    assert set(doc["paths"]["/runs:list"]) == {"get", "post"}
    assert set(doc["paths"]["/runs:watch"]) == {"get", "post"}
    assert set(doc["paths"]["/audit:list"]) == {"get", "post"}  # a List, though admin's
    assert set(doc["paths"]["/credentials:revoke"]) == {"post"}
    parameters = {p["name"]: p for p in doc["paths"]["/runs:list"]["get"]["parameters"]}
    assert set(parameters) == {
        "task", "states", "page_size", "page_token", "occurrence_from", "occurrence_to",
    }  # fmt: skip
    states = parameters["states"]["schema"]
    assert states["type"] == "array"
    assert states["items"] == {"$ref": "#/components/schemas/hydra.v1.RunState"}
    assert parameters["occurrence_from"]["schema"]["format"] == "date-time"
    assert parameters["task"]["description"] == "Only runs of this task."


def test_schemas_follow_the_proto3_json_mapping(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    run = schemas["hydra.v1.Run"]["properties"]
    assert run["id"]["type"] == "string"
    assert run["occurrence"]["format"] == "date-time"  # Timestamp: an RFC 3339 string
    assert run["state"]["allOf"] == [{"$ref": "#/components/schemas/hydra.v1.RunState"}]
    assert run["params"]["type"] == "object"  # map<string, string>
    assert run["params"]["additionalProperties"] == {"type": "string"}
    assert run["attempts"]["type"] == "array"  # repeated nested message
    assert run["attempts"]["items"] == {"$ref": "#/components/schemas/hydra.v1.Attempt"}
    assert run["task_version"]["type"] == "integer" and run["task_version"]["minimum"] == 0
    state = schemas["hydra.v1.RunState"]
    assert state["type"] == "string" and "RUN_STATE_SUCCEEDED" in state["enum"]
    spec = schemas["hydra.v1.TaskSpec"]["properties"]
    assert spec["timeout"]["type"] == "string" and spec["timeout"]["example"] == "90s"
    assert spec["command"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "The argv to run, each element a Jinja2 template rendered per run.",
    }
    chunk = schemas["hydra.v1.LogChunk"]["properties"]
    assert chunk["data"]["format"] == "byte"  # bytes: base64
    assert chunk["dropped_bytes"]["type"] == "string"  # uint64: a string in proto3 JSON
    assert chunk["dropped_bytes"]["format"] == "uint64"
    trigger = schemas["hydra.v1.Trigger"]
    assert "At most one of: cron, interval, at, after." in trigger["description"]


def test_well_known_types_have_their_json_forms() -> None:
    schemas = Schemas()
    assert schemas.message(timestamp_pb2.Timestamp.DESCRIPTOR) == {
        "type": "string",
        "format": "date-time",
    }
    assert schemas.message(duration_pb2.Duration.DESCRIPTOR)["type"] == "string"
    assert schemas.message(struct_pb2.Struct.DESCRIPTOR)["type"] == "object"
    assert schemas.message(struct_pb2.Value.DESCRIPTOR) == {}  # any JSON value
    assert schemas.components == {}  # none of them is a component


def test_descriptions_come_from_the_proto_comments(doc: dict[str, Any]) -> None:
    trigger = doc["paths"]["/runs:trigger"]["post"]
    assert trigger["summary"].startswith("Creates a manual run.")
    assert trigger["description"].endswith("Role: operator.")
    request = doc["components"]["schemas"]["hydra.v1.TriggerRunRequest"]
    assert request["description"] == "Trigger a manual run."
    assert request["properties"]["task"]["description"] == "Task name."
    assert (
        "RUN_STATE_QUEUED`: Waiting to be leased."
        in (doc["components"]["schemas"]["hydra.v1.RunState"]["description"])
    )
    tags = {tag["name"]: tag.get("description") for tag in doc["tags"]}
    assert tags["RunService"] == "Runs: one execution of a task per occurrence."


def test_streams_are_event_streams_or_ndjson(doc: dict[str, Any]) -> None:
    content = doc["paths"]["/runs:watch"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"text/event-stream", "application/x-ndjson"}
    line = content["application/x-ndjson"]["schema"]["properties"]
    assert line["result"] == {"$ref": "#/components/schemas/hydra.v1.RunEvent"}
    assert line["error"] == {"$ref": "#/components/schemas/Error"}


def test_the_document_is_valid_openapi_3(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.0\.\d+", doc["openapi"])
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    for requirement in doc["security"]:
        assert set(requirement) <= set(schemes)
    declared_tags = {tag["name"] for tag in doc["tags"]}
    operation_ids = []
    for path, method, operation in _operations(doc):
        assert path.startswith("/") and method in HTTP_METHODS
        operation_ids.append(operation["operationId"])
        assert set(operation["tags"]) <= declared_tags
        assert operation["responses"] and all(
            code == "default" or re.fullmatch(r"[1-5](\d\d|XX)", code)
            for code in operation["responses"]
        )
        for response in operation["responses"].values():
            assert "$ref" in response or isinstance(response["description"], str)
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in {"query", "header", "path", "cookie"}
            _check_schema(parameter["schema"])
        if "requestBody" in operation:
            assert operation["requestBody"]["content"]
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    for name, schema in doc["components"]["schemas"].items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
        _check_schema(schema)
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, f"{ref} resolves to nothing"


def _check_schema(schema: Any) -> None:
    assert isinstance(schema, dict)
    assert set(schema) <= SCHEMA_KEYS, set(schema) - SCHEMA_KEYS
    if "$ref" in schema:
        assert set(schema) == {"$ref"}, "a $ref's siblings are ignored in OpenAPI 3.0"
    if "type" in schema:
        assert schema["type"] in SCHEMA_TYPES
    if schema.get("type") == "array":
        _check_schema(schema["items"])
    for member in schema.get("allOf", []):
        _check_schema(member)
    for prop in schema.get("properties", {}).values():
        _check_schema(prop)
    if isinstance(schema.get("additionalProperties"), dict):
        _check_schema(schema["additionalProperties"])
    if "enum" in schema:
        assert schema["enum"] and all(isinstance(value, str) for value in schema["enum"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def test_docs_list_every_endpoint_with_its_methods() -> None:
    text = (Path(__file__).parents[2] / "docs" / "http-api.md").read_text()
    rows = dict(re.findall(r"^\| `(/[a-zA-Z]+:[a-zA-Z]+)` \| ([A-Z, ]+) \|", text, re.MULTILINE))
    assert rows == {endpoint.path: ", ".join(endpoint.http_methods) for endpoint in endpoints()}
