"""``bench`` lives at the top of the repository, outside the installed packages:
put the repository on sys.path so that these tests can import ``bench.chaos``."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
