"""Loads the known-answer vectors captured from tinc 1.1 (../shared/vectors beside the repo).

A missing vectors directory is a failure, not a skip: CI always has ../shared, and a KAT
suite that silently skips proves nothing.
"""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS_DIR = REPO.parent / "shared" / "vectors"


def load(name):
    """The parsed JSON of vectors/<name> (name with or without '.json')."""
    if not name.endswith(".json"):
        name += ".json"
    path = VECTORS_DIR / name
    if not path.is_file():
        pytest.fail(f"known-answer vectors missing: {path} (expected ../shared/vectors beside "
                    f"the repository {REPO})", pytrace=False)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def unhex(s):
    return bytes.fromhex(s)
