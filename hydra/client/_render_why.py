"""``hydractl why``: an explanation as short sentences, or as JSON."""

from __future__ import annotations

from hydra.client._render import JSONObject, iso, local, run_json
from hydra.occurrences import Explanation


def why_text(explanation: Explanation) -> str:
    """The occurrence, then one sentence per fact, most important first."""
    head = f"{explanation.task} at {local(explanation.occurrence)} ({iso(explanation.occurrence)})"
    return "\n".join([head, *(f"  {fact.message}" for fact in explanation.facts)])


def why_json(explanation: Explanation) -> JSONObject:
    """An explanation as JSON: the run (or null) and the facts with their ids."""
    return {
        "task": explanation.task,
        "occurrence": iso(explanation.occurrence),
        "run": None if explanation.run is None else run_json(explanation.run),
        "facts": [
            {"kind": fact.kind.value, "message": fact.message, "ids": dict(fact.ids)}
            for fact in explanation.facts
        ],
    }
