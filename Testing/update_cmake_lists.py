"""Regenerate the engine file lists in AsymSeg/CMakeLists.txt.

The engine package ``AsymSeg/asymseg`` ships inside the AsymSeg Slicer module, and Slicer
packages only the files its CMakeLists.txt lists. The lists between the marker comments

    # BEGIN GENERATED ENGINE_SCRIPTS ... # END GENERATED ENGINE_SCRIPTS
    # BEGIN GENERATED ENGINE_RESOURCES ... # END GENERATED ENGINE_RESOURCES

are written by this script from the files on disk (those git tracks or would track):

    python Testing/update_cmake_lists.py           # rewrite the blocks
    python Testing/update_cmake_lists.py --check   # exit 1 and name the differences
    python Testing/update_cmake_lists.py --tracked # only files git tracks (before a commit)

The consistency test (Testing/slicer/test_slicer_packaging.py) uses the same functions.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_MODULE = "AsymSeg"
ENGINE_PACKAGE = "asymseg"
#: Paths never shipped (build and cache output), when git cannot tell.
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".orig", ".rej", "~")


def moduleFiles(moduleDir: Path, trackedOnly: bool = False) -> list[str]:
    """Files under a module folder that ship with it, as sorted POSIX paths relative to it.

    Uses git (tracked files plus untracked files that are not ignored; only tracked ones with
    ``trackedOnly``) when the folder is in a work tree, so ignored build output never counts;
    otherwise walks the folder and skips caches and build output.
    """
    moduleDir = Path(moduleDir).resolve()
    untracked = [] if trackedOnly else ["--others", "--exclude-standard"]
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", *untracked, "-z", "--", "."],
            cwd=moduleDir, capture_output=True, check=True, text=True).stdout
        files = [moduleDir / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [Path(root) / name for root, dirs, names in os.walk(moduleDir)
                 for name in names]
    result = set()
    for path in files:
        relative = path.relative_to(moduleDir)
        parts = set(relative.parts)
        if not path.is_file() or parts & IGNORED_PARTS or any(
                part.endswith(IGNORED_SUFFIXES) for part in relative.parts):
            continue
        result.add(relative.as_posix())
    return sorted(result)


def engineLists(moduleDir: Path, trackedOnly: bool = False) -> tuple[list[str], list[str]]:
    """(scripts, resources) of the engine package inside the module folder."""
    files = [f for f in moduleFiles(moduleDir, trackedOnly) if f.startswith(ENGINE_PACKAGE + "/")]
    return [f for f in files if f.endswith(".py")], [f for f in files if not f.endswith(".py")]


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(?P<indent>[ \t]*)# BEGIN GENERATED {name}\b[^\n]*\n(?P<body>.*?)"
                      rf"(?P=indent)# END GENERATED {name}\b", re.S)


def replaceBlock(text: str, name: str, entries: list[str]) -> str:
    """Replace the body between the ``name`` markers with ``entries``, one per line.

    Raises:
        ValueError: the markers are missing.
    """
    pattern = _block(name)
    match = pattern.search(text)
    if match is None:
        raise ValueError(f"CMakeLists.txt: markers '# BEGIN GENERATED {name}' / '# END GENERATED {name}' not found")
    indent = match.group("indent")
    body = "".join(f"{indent}{entry}\n" for entry in entries)
    start, end = match.span("body")
    return text[:start] + body + text[end:]


def cmakeList(text: str, variable: str, moduleName: str) -> list[str]:
    """The entries of ``set(VARIABLE ...)`` in a CMakeLists.txt, comments removed, ${MODULE_NAME} expanded.

    Raises:
        ValueError: no such ``set(``.
    """
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    match = re.search(rf"set\(\s*{re.escape(variable)}\b(?P<body>[^)]*)\)", code)
    if match is None:
        raise ValueError(f"CMakeLists.txt has no set({variable} ...)")
    return [token.replace("${MODULE_NAME}", moduleName) for token in match.group("body").split()]


def updatedText(cmakeFile: Path, moduleDir: Path, trackedOnly: bool = False) -> str:
    scripts, resources = engineLists(moduleDir, trackedOnly)
    text = cmakeFile.read_text(encoding="utf-8")
    text = replaceBlock(text, "ENGINE_SCRIPTS", scripts)
    return replaceBlock(text, "ENGINE_RESOURCES", resources)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the lists are current")
    parser.add_argument("--tracked", action="store_true",
                        help="list only files git tracks (what a clean clone has; use before committing)")
    args = parser.parse_args(argv)
    moduleDir = REPO / ENGINE_MODULE
    cmakeFile = moduleDir / "CMakeLists.txt"
    current = cmakeFile.read_text(encoding="utf-8")
    updated = updatedText(cmakeFile, moduleDir, trackedOnly=args.tracked)
    if updated == current:
        print(f"{cmakeFile.relative_to(REPO)}: engine lists are current")
        return 0
    if args.check:
        old = set(cmakeList(current, "MODULE_PYTHON_SCRIPTS", ENGINE_MODULE)
                  + cmakeList(current, "MODULE_PYTHON_RESOURCES", ENGINE_MODULE))
        new = set(cmakeList(updated, "MODULE_PYTHON_SCRIPTS", ENGINE_MODULE)
                  + cmakeList(updated, "MODULE_PYTHON_RESOURCES", ENGINE_MODULE))
        for name in sorted(new - old):
            print(f"not listed: {ENGINE_MODULE}/{name}")
        for name in sorted(old - new):
            print(f"listed but absent: {ENGINE_MODULE}/{name}")
        print(f"run: python {Path(__file__).relative_to(REPO)}")
        return 1
    tmp = cmakeFile.with_name(cmakeFile.name + ".tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, cmakeFile)
    print(f"{cmakeFile.relative_to(REPO)}: engine lists updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
