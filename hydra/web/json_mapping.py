"""JSON <-> proto for the API, with the proto's field names (docs/http-api.md).

``json_format`` does the conversion; this module walks the request first so
that every problem names the path of its field (``spec.triggers[0].cron``), in
words, instead of protobuf's internal message. Query parameters of a GET are
the top-level fields of the request, given as strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

from hydra.errors import FieldProblem, InvalidArgument

_KINDS = {
    FieldDescriptor.TYPE_STRING: "a string",
    FieldDescriptor.TYPE_BOOL: "true or false",
    FieldDescriptor.TYPE_BYTES: "base64 bytes",
    FieldDescriptor.TYPE_DOUBLE: "a number",
    FieldDescriptor.TYPE_FLOAT: "a number",
    FieldDescriptor.TYPE_INT32: "an integer",
    FieldDescriptor.TYPE_SINT32: "an integer",
    FieldDescriptor.TYPE_SFIXED32: "an integer",
    FieldDescriptor.TYPE_INT64: "an integer",
    FieldDescriptor.TYPE_SINT64: "an integer",
    FieldDescriptor.TYPE_SFIXED64: "an integer",
    FieldDescriptor.TYPE_UINT32: "an integer from 0",
    FieldDescriptor.TYPE_FIXED32: "an integer from 0",
    FieldDescriptor.TYPE_UINT64: "an integer from 0",
    FieldDescriptor.TYPE_FIXED64: "an integer from 0",
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": 'an RFC 3339 time with its offset, e.g. "2026-01-31T02:30:00Z"',
    "google.protobuf.Duration": 'a duration in seconds with an "s", e.g. "90s" or "0.5s"',
}


def to_json(message: Message) -> dict[str, Any]:
    """A response as JSON: proto field names, enums by name, fields without
    presence always there (``"created": false``, ``"runs": []``), 64-bit
    integers as strings, bytes as base64 (proto3's JSON mapping)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def from_json(data: object, message: Message) -> Message:
    """Fill ``message`` from a JSON value.

    Raises:
        InvalidArgument: naming the path of every field that is wrong.
    """
    problems: list[FieldProblem] = []
    _merge(data, message, "", problems)
    if problems:
        raise InvalidArgument(problems)
    return message


def from_query(query: Sequence[tuple[str, str]], message: Message) -> Message:
    """Fill ``message`` from query parameters (``?task=t&states=A&states=B``).

    Raises:
        InvalidArgument: naming the parameter.
    """
    descriptor = _descriptor(message)
    data: dict[str, Any] = {}
    for key, value in query:
        field = _field(descriptor, key)
        if field is None or (field.message_type is not None and not _is_leaf(field)):
            problem = "not a query parameter of this call (send the request as a JSON body)"
            raise InvalidArgument(problem if field else _unknown(descriptor), path=key)
        if field.is_repeated:
            data.setdefault(key, []).append(_scalar(field, value))
        elif key in data:
            raise InvalidArgument("given more than once", path=key)
        else:
            data[key] = _scalar(field, value)
    return from_json(data, message)


def _scalar(field: FieldDescriptor, text: str) -> object:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"true": True, "false": False}.get(text, text)
    return text


def _merge(data: object, message: Message, path: str, problems: list[FieldProblem]) -> None:
    descriptor = _descriptor(message)
    if not isinstance(data, dict):
        problems.append(FieldProblem(path=path, message="expected a JSON object"))
        return
    message.SetInParent()
    chosen: dict[str, str] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        field = _field(descriptor, key)
        if field is None:
            problems.append(FieldProblem(path=where, message=_unknown(descriptor)))
            continue
        if value is None:
            continue  # null: unset, as in proto3's JSON mapping
        oneof = _real_oneof(field)
        if oneof is not None:
            if oneof.name in chosen:
                problem = f"only one of {_names(oneof)} may be set (also {chosen[oneof.name]})"
                problems.append(FieldProblem(path=where, message=problem))
                continue
            chosen[oneof.name] = key
        _merge_field(field, value, message, where, problems)


def _merge_field(
    field: FieldDescriptor, value: object, message: Message, path: str, problems: list[FieldProblem]
) -> None:
    if _is_leaf(field) or (_is_map(field) and _is_leaf(_values(field))):
        _merge_leaf(field, value, message, path, problems)
    elif _is_map(field):
        if not isinstance(value, dict):
            problems.append(FieldProblem(path=path, message="expected a JSON object"))
            return
        for key, item in value.items():
            _merge(item, getattr(message, field.name)[key], f"{path}.{key}", problems)
    elif field.is_repeated:
        if not isinstance(value, list):
            problems.append(FieldProblem(path=path, message="expected a JSON array"))
            return
        for index, item in enumerate(value):
            _merge(item, getattr(message, field.name).add(), f"{path}[{index}]", problems)
    else:
        _merge(value, getattr(message, field.name), path, problems)


def _merge_leaf(
    field: FieldDescriptor, value: object, message: Message, path: str, problems: list[FieldProblem]
) -> None:
    """Scalars, enums, well-known types, and maps and lists of them: json_format's."""
    single = type(message)()
    try:
        json_format.ParseDict({field.name: value}, single)
    except json_format.ParseError:
        problems.append(FieldProblem(path=path, message=f"expected {_expected(field)}"))
        return
    message.MergeFrom(single)


def _expected(field: FieldDescriptor) -> str:
    if _is_map(field):
        return f"a JSON object of {_expected(_values(field))}"
    kind = _kind(field)
    return f"a JSON array of {kind}" if field.is_repeated else kind


def _kind(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        return "one of " + ", ".join(value.name for value in field.enum_type.values[1:])
    if field.message_type is not None:
        return _WELL_KNOWN.get(field.message_type.full_name, "a JSON value")
    return _KINDS.get(field.type, "a JSON value")


def _descriptor(message: Message) -> Descriptor:
    # The upb Descriptor the runtime gives is the one the stubs call Descriptor.
    return cast(Descriptor, message.DESCRIPTOR)


def _values(field: FieldDescriptor) -> FieldDescriptor:
    """The value field of a map field's entry."""
    return cast(Descriptor, field.message_type).fields_by_name["value"]


def _field(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    """The field named ``key`` (or its lowerCamelCase JSON name, which proto3's
    JSON parsers accept too)."""
    field = descriptor.fields_by_name.get(key)
    if field is not None:
        return field
    return next((f for f in descriptor.fields if f.json_name == key), None)


def _unknown(descriptor: Descriptor) -> str:
    fields = ", ".join(field.name for field in descriptor.fields)
    return f"unknown field of {descriptor.name} (its fields: {fields})"


def _is_leaf(field: FieldDescriptor) -> bool:
    """Converted by json_format in one piece: not a message of ours."""
    kind = field.message_type
    return kind is None or kind.full_name.startswith("google.protobuf.")


def _is_map(field: FieldDescriptor) -> bool:
    kind = field.message_type
    return kind is not None and kind.GetOptions().map_entry


def real_oneofs(descriptor: Descriptor) -> list[OneofDescriptor]:
    """The message's oneofs, without those proto3 makes for each ``optional`` field."""
    return [oneof for oneof in descriptor.oneofs if not _synthetic(oneof)]


def _real_oneof(field: FieldDescriptor) -> OneofDescriptor | None:
    oneof = field.containing_oneof
    return None if oneof is None or _synthetic(oneof) else oneof


def _synthetic(oneof: OneofDescriptor) -> bool:
    return len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}"


def _names(oneof: OneofDescriptor) -> str:
    return ", ".join(field.name for field in oneof.fields)
