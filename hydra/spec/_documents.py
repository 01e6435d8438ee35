"""YAML task files: every task of a file, parsed and validated all or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from hydra.domain import TaskSpec
from hydra.errors import InvalidArgument
from hydra.spec._parse import task_from_dict
from hydra.spec._problems import _join, _Problems, _type_name

# --- YAML files ---------------------------------------------------------------------


def load_task_documents(text: str, source: str = "<input>") -> list[TaskSpec]:
    """Parse and validate every task of a YAML file, all or nothing.

    The text holds one task, several ``---``-separated documents, a list of
    tasks, or a mapping ``{tasks: [...]}``; these forms may be mixed across
    documents. Problem paths start with the task's position and name, e.g.
    ``tasks[1] (billing.export).triggers[0].cron``.

    Args:
        text: The YAML text.
        source: Where the text comes from, for messages, e.g. a file name.

    Returns:
        The specs, in file order.

    Raises:
        InvalidArgument: On a YAML syntax error (with line and column), on a
            duplicate task name, or with every problem of every task.
    """
    problems = _Problems()
    entries = _task_entries(_load_yaml(text, source), source, problems)
    specs = [
        _parse_entry(data, _entry_path(index, data), problems) for index, data in enumerate(entries)
    ]
    _check_unique_names(entries, problems)
    if not entries and not problems.items:
        problems.add(source, "no tasks found")
    if problems.items:
        raise InvalidArgument(problems.items)
    return [spec for spec in specs if spec is not None]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_UniqueKeyLoader))  # a safe loader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InvalidArgument(f"invalid YAML: {where}{error.problem}", source) from None
    except yaml.YAMLError as error:
        raise InvalidArgument(f"invalid YAML: {error}", source) from None


def _task_entries(documents: list[Any], source: str, problems: _Problems) -> list[Any]:
    """The raw tasks of all documents, in order."""
    entries: list[Any] = []
    for number, document in enumerate(documents, start=1):
        if isinstance(document, Mapping) and "tasks" in document:
            document = _unwrap_tasks(document, problems)
        if isinstance(document, list):
            entries.extend(document)
        elif isinstance(document, Mapping):
            entries.append(document)
        elif document is not None:
            message = "must be a task, a list of tasks, or a mapping with 'tasks'"
            problems.add(source, f"document {number}: {message}, not {_type_name(document)}")
    return entries


def _unwrap_tasks(document: Mapping[Any, Any], problems: _Problems) -> list[Any]:
    """The list of a ``{tasks: [...]}`` document."""
    for key in sorted(document.keys() - {"tasks"}, key=str):
        problems.add(str(key), "unknown field; a document with 'tasks' has nothing else")
    tasks = document["tasks"]
    if isinstance(tasks, list):
        return tasks
    problems.add("tasks", f"must be a list of tasks, not {_type_name(tasks)}")
    return []


def _entry_path(index: int, data: object) -> str:
    name = data.get("name") if isinstance(data, Mapping) else None
    return f"tasks[{index}] ({name})" if isinstance(name, str) else f"tasks[{index}]"


def _parse_entry(data: object, path: str, problems: _Problems) -> TaskSpec | None:
    try:
        return task_from_dict(data, path)  # type: ignore[arg-type]  # checked inside
    except InvalidArgument as error:
        problems.extend(error.problems)
        return None


def _check_unique_names(entries: list[Any], problems: _Problems) -> None:
    first: dict[str, str] = {}
    for index, data in enumerate(entries):
        path = _entry_path(index, data)
        name = data.get("name") if isinstance(data, Mapping) else None
        if isinstance(name, str) and name in first:
            problems.add(_join(path, "name"), f"duplicate task name; first at {first[name]}")
        elif isinstance(name, str):
            first[name] = path
