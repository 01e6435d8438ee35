"""What the process logs say about zombie work: attempts an agent fenced itself,
and late work the cluster refused. They show that checks 2 and 3 had something
to catch."""

from __future__ import annotations

from pathlib import Path

#: Counted phrase -> its meaning, as ``hydra`` processes log it.
ZOMBIE_SIGNS = {
    "killing (FENCED": "attempts fenced by their agent (lease not renewed)",
    "revoked by the coordinator; killing its process": "attempts killed on revocation",
    "revoked by the coordinator; report dropped": "late reports dropped on revocation",
    "refused report of agent": "reports refused by a coordinator",
    "under stale lease": "starts refused by a coordinator",
}


def zombie_counts(work_dir: Path) -> dict[str, int]:
    """How often each sign of zombie work appears in the logs of `work_dir`."""
    counts = dict.fromkeys(ZOMBIE_SIGNS.values(), 0)
    for log in sorted(work_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        for phrase, meaning in ZOMBIE_SIGNS.items():
            counts[meaning] += text.count(phrase)
    return counts
