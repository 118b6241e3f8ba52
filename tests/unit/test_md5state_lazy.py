"""No import loads a native library: md5state's libcrypto is loaded on first use, by the S3 store only."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2_downloader.adapters.store import md5state

_SRC = Path(md5state.__file__).parents[3]

#: Imports every module of the package (entry points, wiring, the stores) with ``ctypes.CDLL``
#: recording its calls, then says what was loaded.
_PROBE = """
import ctypes, importlib, json, pkgutil, sys

calls = []
real = ctypes.CDLL

class Recording(real):
    def __init__(self, name, *args, **kwargs):
        calls.append(str(name))
        super().__init__(name, *args, **kwargs)

ctypes.CDLL = Recording

import s2_downloader
walked = pkgutil.walk_packages(s2_downloader.__path__, "s2_downloader.")
names = [m.name for m in walked if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
from s2_downloader.adapters.store import md5state
print(json.dumps({
    "modules": names,
    "calls": calls,
    "lib": md5state._lib is None,
    "tried": md5state._tried,
}))
"""


def _probe() -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(_SRC)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_every_module_loads_no_native_library() -> None:
    """Every entry point, the wiring and both stores imported: no ``ctypes.CDLL`` call, no handle.

    ``/proc/self/maps`` cannot tell: Python's ssl and hashlib, and psycopg's binary wheel, map
    a libcrypto of their own on import; what is checked is that our code loads none.
    """
    result = _probe()

    modules = result["modules"]
    assert isinstance(modules, list)
    for needed in (
        "s2_downloader.entrypoints.cli",
        "s2_downloader.entrypoints.lambda_handler",
        "s2_downloader.entrypoints.wiring",
        "s2_downloader.adapters.store.s3.store",
        "s2_downloader.adapters.store.md5state",
    ):
        assert needed in modules
    assert ([], True, False) == (result["calls"], result["lib"], result["tried"])


def test_only_the_linux_sonames_of_openssl_3_and_1_1_are_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """On first use, exactly these names, in this order, and nothing found by searching."""
    tried: list[str] = []

    def refuse(name: str, *args: object, **kwargs: object) -> object:
        del args, kwargs
        tried.append(name)
        raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    monkeypatch.setattr(md5state, "_lib", None)
    monkeypatch.setattr(md5state, "_tried", False)

    assert not md5state.available()
    assert not md5state.available()  # tried once per process
    assert md5state.ResumableMd5.restore(f"{md5state.STATE_FORMAT}:AAAA") is None
    assert ["libcrypto.so.3", "libcrypto.so.1.1"] == tried
