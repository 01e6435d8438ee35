"""Problems found in a spec, and the paths (YAML field names) that say where."""

from __future__ import annotations

from collections.abc import Iterable

from hydra.errors import FieldProblem

# --- problems and paths -----------------------------------------------------------


class _Problems:
    """The problems found so far."""

    def __init__(self) -> None:
        self.items: list[FieldProblem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldProblem(path=path, message=message))

    def extend(self, problems: Iterable[FieldProblem]) -> None:
        self.items.extend(problems)


def _join(path: str, name: str | int) -> str:
    """``path`` extended by a field name or a list index."""
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _inside(path: str, ancestor: str) -> bool:
    """True when ``path`` is ``ancestor`` or lies inside it."""
    if not ancestor or path == ancestor:
        return True
    return path.startswith((ancestor + ".", ancestor + "["))


def _type_name(value: object) -> str:
    """The YAML word for the type of ``value``."""
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {type(None): "null", list: "a list", tuple: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """``repr(value)``, shortened: messages must not echo a 10 MB argument."""
    text = repr(value[:61] if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."
