"""The one place that imports the compiled modules (tincapp._record, _replay, _batchio,
_fastpath).

tincapp needs them: the hot paths have no pure-Python fallback inside the package (the
plain-Python references under tests/reference/ exist to check the compiled code, and are far
too slow to carry traffic). If they are missing, say how to build them.
"""
from tincapp.errors import TincappError


class NotBuiltError(TincappError):
    """The Cython extensions have not been compiled."""


def _load(name):
    import importlib
    try:
        return importlib.import_module(f"tincapp._{name}")
    except ImportError as e:
        raise NotBuiltError(
            f"compiled module tincapp._{name} is missing ({e}); build it with "
            f"'python setup.py build_ext --inplace' (the README's build command does)") from e


record = _load("record")
replay = _load("replay")
batchio = _load("batchio")
fastpath = _load("fastpath")
