"""STYLE 1.1: sans-I/O cores import no socket, asyncio, time, os or random (checked on the AST,
so a new import in a core fails here rather than in review)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tincapp"
CORES = ["sptps", "meta", "mesh", "datapath"]
CORE_FILES = ["control.py"]
FORBIDDEN = {"socket", "asyncio", "time", "os", "random", "subprocess", "select"}


def core_modules():
    for pkg in CORES:
        yield from sorted((ROOT / pkg).glob("*.py"))
    for name in CORE_FILES:
        yield ROOT / name


@pytest.mark.parametrize("path", list(core_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_has_no_io_imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name}:{node.lineno} imports {name}"
