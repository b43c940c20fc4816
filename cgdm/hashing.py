"""Stable hashes of configuration fragments, shared by the trainers (resume checks) and the results'
provenance (the ``config_hash`` column of :mod:`cgdm.results`' tables). Standard library only."""

from __future__ import annotations

import hashlib
import json

__all__ = ["config_hash"]


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able config fragment (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
