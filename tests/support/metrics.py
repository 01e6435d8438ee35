"""Reading `/metrics` in tests: scrape, parse, pick a sample, run promtool."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

#: Where Debian's `prometheus` package puts its binaries when PATH does not have them.
DEBIAN_BIN = Path("/usr/bin")


def prometheus_binary(name: str) -> str:
    """`prometheus` or `promtool`, on PATH or in /usr/bin; fails (not skips) without it."""
    found = shutil.which(name) or shutil.which(name, path=str(DEBIAN_BIN))
    if found is None:
        raise AssertionError(
            f"{name} is not installed: apt-get update && apt-get install -y prometheus "
            "(Debian's package has prometheus and promtool)"
        )
    return found


@dataclass(frozen=True)
class Scrape:
    """One `/metrics` answer: its HTTP status and body."""

    status: int
    body: str

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The sample `name` whose labels include `labels` (None: there is none)."""
        wanted = dict(labels or {})
        for family in text_string_to_metric_families(self.body):
            for sample in family.samples:
                if sample.name == name and wanted.items() <= sample.labels.items():
                    return float(sample.value)
        return None

    def names(self) -> set[str]:
        """Every metric family exposed."""
        return {family.name for family in text_string_to_metric_families(self.body)}


def scrape(address: str, *, token: str | None = None) -> Scrape:
    """GET http://address/metrics (with `Authorization: Bearer token`)."""
    request = urllib.request.Request(f"http://{address}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Scrape(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        with error:
            return Scrape(error.code, error.read().decode())


def promtool_check(body: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` of an exposition (its exit code and complaints)."""
    return subprocess.run(
        [prometheus_binary("promtool"), "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
