"""Hydra: a distributed scheduler with an exact record of every run."""

from __future__ import annotations

__version__ = "0.1.0"
