"""The proto's comments, for the OpenAPI document's descriptions.

The generated ``_pb2`` modules carry no source info, but mypy-protobuf copies
every comment of the proto into the ``.pyi`` stubs it generates beside them
(shipped with the package, as docstrings). They are read from there with
``ast``, keyed by full proto name: ``hydra.v1.TriggerRunRequest``,
``hydra.v1.TriggerRunRequest.task``, ``hydra.v1.RunService.Trigger``,
``hydra.v1.RunState.RUN_STATE_QUEUED``. A stub that is missing gives no comments.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Iterator, Mapping
from importlib import resources

from google.protobuf.descriptor import FileDescriptor

_ENUM_WRAPPER = ("_", "EnumTypeWrapper")


@functools.cache
def comments(file: FileDescriptor) -> Mapping[str, str]:
    """Full proto name -> its comment, for the messages, fields, enums, values and
    services of ``file`` (``hydra/v1/run_service.proto``)."""
    package, stem = file.package, file.name.rsplit("/", 1)[-1].removesuffix(".proto")
    found: dict[str, str] = {}
    for suffix in ("_pb2.pyi", "_pb2_grpc.pyi"):
        tree = _stub(package, f"{stem}{suffix}")
        if tree is not None:
            found.update(_documented(tree.body, package))
    return found


def _stub(package: str, name: str) -> ast.Module | None:
    stub = resources.files(package).joinpath(name)
    if not stub.is_file():
        return None
    return ast.parse(stub.read_text(encoding="utf-8"))


def _documented(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
    """(name, comment) of each class of ``body`` and of what it declares."""
    for node in body:
        if not isinstance(node, ast.ClassDef):
            continue
        name = _proto_name(node.name)
        doc = ast.get_docstring(node)
        if doc and not node.name.startswith("_"):
            yield f"{prefix}.{name}", doc
        yield from _members(node.body, f"{prefix}.{name}")
        yield from _documented(node.body, f"{prefix}.{name}" if name == node.name else prefix)


def _proto_name(class_name: str) -> str:
    """The proto name a stub class stands for: ``RunServiceStub`` -> ``RunService``,
    ``_RunStateEnumTypeWrapper`` -> ``RunState`` (whose values it declares)."""
    if class_name.startswith(_ENUM_WRAPPER[0]) and class_name.endswith(_ENUM_WRAPPER[1]):
        return class_name[1 : -len(_ENUM_WRAPPER[1])]
    return class_name.removesuffix("Stub")


def _members(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
    """Fields, methods and enum values: an annotated name followed by a string,
    or a property whose docstring is the field's comment."""
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment = _string(after)
            if comment is not None:
                yield f"{prefix}.{node.target.id}", inspect.cleandoc(comment)
        elif isinstance(node, ast.FunctionDef) and _is_property(node):
            doc = ast.get_docstring(node)
            if doc:
                yield f"{prefix}.{node.name}", doc


def _string(node: ast.stmt | None) -> str | None:
    """The string a statement is, if it is one (a docstring after a name)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        value = node.value.value
        return value if isinstance(value, str) else None
    return None


def _is_property(node: ast.FunctionDef) -> bool:
    return any(
        isinstance(decorator, ast.Attribute) and decorator.attr == "property"
        for decorator in node.decorator_list
    )
