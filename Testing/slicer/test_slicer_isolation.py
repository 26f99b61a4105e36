"""The two sides stay apart: the Slicer Lib never loads torch or the engine; the engine never loads
slicer, Qt or VTK. Each side is imported in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slicer

REPO = Path(__file__).resolve().parents[2]
LIB_PACKAGES = {"AsymSegLib": REPO / "AsymSeg", "AsymSegTrainingLib": REPO / "AsymSegTraining"}
LIB_FORBIDDEN = ("torch", "asymseg", "qt", "ctk", "PythonQt", "slicer.ScriptedLoadableModule",
                 "slicer.parameterNodeWrapper")
ENGINE_FORBIDDEN = ("slicer", "slicer_core", "qt", "ctk", "PythonQt", "vtk", "vtkmodules", "AsymSegLib",
                    "AsymSegTrainingLib")


def runFresh(code: str) -> dict:
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def libModules() -> list[str]:
    names = []
    for package, folder in LIB_PACKAGES.items():
        for path in sorted((folder / package).glob("*.py")):
            names.append(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return names


@pytest.mark.skipif(importlib.util.find_spec("slicer_core") is None, reason="slicer-core (real MRML) is not installed")
def test_each_lib_module_imports_under_plain_mrml_without_torch_or_the_engine():
    modules = libModules()
    assert "AsymSegLib.process" in modules and "AsymSegTrainingLib.jobs" in modules
    report = runFresh(f"""
        import importlib, json, sys
        sys.path[:0] = {[str(p) for p in LIB_PACKAGES.values()]!r}
        forbidden = {LIB_FORBIDDEN!r}
        def loaded():
            return sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
        before = set(loaded())
        found = {{}}
        for name in {modules!r}:
            importlib.import_module(name)
            new = sorted(set(loaded()) - before)
            if new:
                found[name] = new
                before |= set(new)
        print(json.dumps(found))
    """)
    assert report == {}, f"Lib modules loaded forbidden modules: {report}"


def test_the_engine_imports_without_slicer_qt_or_vtk():
    report = runFresh(f"""
        import importlib, json, pkgutil, sys
        import asymseg, asymseg.cli, asymseg.io
        names = ["asymseg"] + [m.name for m in pkgutil.walk_packages(asymseg.__path__, "asymseg.")]
        failed = {{}}
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as err:  # an optional extra (e.g. the bench's monai) may be absent
                failed[name] = str(err)
        for name in asymseg.cli.COMMANDS:
            importlib.import_module("asymseg.commands." + name.replace("-", "_"))
        forbidden = {ENGINE_FORBIDDEN!r}
        bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
        print(json.dumps({{"bad": bad, "count": len(names), "failed": failed}}))
    """)
    assert report["bad"] == [], f"the engine loaded: {report['bad']}"
    assert report["count"] > 10
    assert all("monai" in message for message in report["failed"].values()), report["failed"]
