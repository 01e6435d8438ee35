"""The OpenAPI 3 document of the JSON API, generated from the proto descriptors.

Served at /api/v1/openapi.json (docs/http-api.md). Paths come from
:func:`hydra.web.endpoints.endpoints`, schemas from the message descriptors
(proto3's JSON mapping: enums by name, 64-bit integers as strings, Timestamp as
an RFC 3339 string, Duration as ``"90s"``), descriptions from the proto's
comments (:mod:`hydra.web.proto_docs`). Nothing here names a message or an RPC
of Hydra's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

import hydra
from hydra.coordinator.api.roles import ROLES
from hydra.web.endpoints import Endpoint, service_descriptor
from hydra.web.http_errors import HTTP_STATUS
from hydra.web.json_mapping import real_oneofs
from hydra.web.proto_docs import comments
from hydra.web.streams import EVENT_STREAM, NDJSON

Schema = dict[str, Any]
_F = FieldDescriptor
_INT64 = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64}
_SCALARS: Mapping[int, Schema] = {
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1},
    _F.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1},
    **{kind: {"type": "string", "format": "int64"} for kind in _INT64},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
}
#: The well-known types as proto3's JSON mapping writes them.
WELL_KNOWN: Mapping[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "example": "90s",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
}
_ERROR = "#/components/schemas/Error"


def document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The whole document for ``endpoints``."""
    schemas = Schemas()
    paths: dict[str, Any] = {}
    services: dict[str, None] = {}
    for endpoint in endpoints:
        services[endpoint.service] = None
        paths[endpoint.path] = {
            method.lower(): _operation(endpoint, method, schemas)
            for method in endpoint.http_methods
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Hydra HTTP API",
            "version": hydra.__version__,
            "description": "The gRPC contract of proto/hydra/v1 as JSON over HTTP, generated "
            "from its descriptors: docs/http-api.md.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "tags": [_tag(service) for service in services],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**schemas.components, "Error": _error_schema()},
            "responses": {
                "Error": {
                    "description": "The call failed: the HTTP status follows the gRPC status.",
                    "content": {"application/json": {"schema": {"$ref": _ERROR}}},
                }
            },
        },
    }


def _tag(service: str) -> dict[str, str]:
    descriptor = service_descriptor(service)
    tag = {"name": service}
    described = comments(descriptor.file).get(descriptor.full_name)
    if described:
        tag["description"] = described
    return tag


def _operation(endpoint: Endpoint, http_method: str, schemas: Schemas) -> dict[str, Any]:
    method = endpoint.method
    described = comments(method.containing_service.file).get(method.full_name, "")
    role = ROLES.get(f"/{method.containing_service.full_name}/{method.name}")
    operation: dict[str, Any] = {
        "operationId": f"{endpoint.service}_{method.name}_{http_method.lower()}",
        "tags": [endpoint.service],
        "summary": described.split("\n\n")[0].replace("\n", " ") or method.name,
        "description": f"{described}\n\nRole: {role.value if role else 'none'}.".lstrip(),
        "responses": {
            "200": _success(endpoint, schemas),
            "default": {"$ref": "#/components/responses/Error"},
        },
    }
    if http_method == "GET":
        operation["parameters"] = _query_parameters(method.input_type, schemas)
    else:
        content = {"application/json": {"schema": schemas.message(method.input_type)}}
        operation["requestBody"] = {"required": False, "content": content}
    return operation


def _success(endpoint: Endpoint, schemas: Schemas) -> dict[str, Any]:
    output = endpoint.method.output_type
    if not endpoint.streaming:
        content = {"application/json": {"schema": schemas.message(output)}}
        described = comments(output.file).get(output.full_name, output.full_name)
        return {"description": described, "content": content}
    line = {
        "type": "object",
        "properties": {"result": schemas.message(output), "error": {"$ref": _ERROR}},
    }
    return {
        "description": f"A stream of {output.full_name}: server-sent events (a `data:` line "
        "of JSON per message, then an `end` or `error` event), or with `Accept: "
        "application/x-ndjson` a JSON line per message (`result`) or failure (`error`).",
        "content": {EVENT_STREAM: {"schema": {"type": "string"}}, NDJSON: {"schema": line}},
    }


def _query_parameters(request: Descriptor, schemas: Schemas) -> list[dict[str, Any]]:
    """A query parameter per top-level field that a string can carry."""
    parameters = []
    for field in request.fields:
        if field.message_type is not None and field.message_type.full_name not in WELL_KNOWN:
            continue
        schema = schemas.field(field, comments(request.file))
        parameter = {"name": field.name, "in": "query", "schema": schema}
        if "description" in schema:
            parameter["description"] = schema.pop("description")
        parameters.append(parameter)
    return parameters


class Schemas:
    """The component schemas of every message and enum reached, made once each."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor) -> Schema:
        """A reference to the message's schema (a well-known type: its JSON form)."""
        name = descriptor.full_name
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])
        if name.startswith("google.protobuf."):
            return {}  # another well-known type: any JSON value
        if name not in self.components:
            self.components[name] = {}  # taken before recursing: messages may nest themselves
            self.components[name] = self._object(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: FieldDescriptor, docs: Mapping[str, str]) -> Schema:
        """A field's schema, described by its comment in ``docs``."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = self._single(field.message_type.fields_by_name["value"])
            schema: Schema = {"type": "object", "additionalProperties": value}
        elif field.is_repeated:
            schema = {"type": "array", "items": self._single(field)}
        else:
            schema = self._single(field)
        described = docs.get(field.full_name)
        if not described:
            return schema
        if "$ref" in schema:  # OpenAPI 3.0 ignores a $ref's siblings
            return {"allOf": [schema], "description": described}
        return {**schema, "description": described}

    def _single(self, field: FieldDescriptor) -> Schema:
        if field.enum_type is not None:
            return self._enum(field.enum_type)
        if field.message_type is not None:
            return self.message(field.message_type)
        return dict(_SCALARS[field.type])

    def _object(self, descriptor: Descriptor) -> Schema:
        docs = comments(descriptor.file)
        schema: Schema = {
            "type": "object",
            "properties": {field.name: self.field(field, docs) for field in descriptor.fields},
        }
        lines = [docs.get(descriptor.full_name, "")]
        for oneof in real_oneofs(descriptor):
            lines.append(f"At most one of: {', '.join(f.name for f in oneof.fields)}.")
        described = "\n\n".join(line for line in lines if line)
        if described:
            schema["description"] = described
        return schema

    def _enum(self, descriptor: EnumDescriptor) -> Schema:
        name = descriptor.full_name
        if name not in self.components:
            docs = comments(descriptor.file)
            lines = [docs.get(name, "")]
            for value in descriptor.values:
                described = docs.get(f"{name}.{value.name}")
                if described:
                    lines.append(f"- `{value.name}`: {' '.join(described.split())}")
            schema: Schema = {"type": "string", "enum": [value.name for value in descriptor.values]}
            described = "\n".join(line for line in lines if line)
            if described:
                schema["description"] = described
            self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


def _error_schema() -> Schema:
    problem = {
        "type": "object",
        "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    }
    detail = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": sorted(HTTP_STATUS)},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "The first field named by problems."},
            "problems": {"type": "array", "items": problem},
        },
    }
    return {"type": "object", "required": ["error"], "properties": {"error": detail}}
