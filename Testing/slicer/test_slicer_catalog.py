"""The extension's description passes the Extensions Index checks: URLs, screenshots, contributors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("AsymSeg", "AsymSegTraining")
#: "First Last (Organisation)" entries, separated by commas.
CONTRIBUTOR = re.compile(r"^[^,()]+ \([^,()]+\)$")


def cmakeSetting(name: str) -> str:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf'set\({name} "([^"]*)"\)', text)
    assert match, f"CMakeLists.txt does not set {name}"
    return match.group(1)


def repositoryUrls():
    scm = json.loads((REPO / "AsymSeg.json").read_text(encoding="utf-8"))["scm_url"]
    assert scm.endswith(".git")
    web = scm[: -len(".git")]
    owner, name = web.split("github.com/", 1)[1].split("/")
    return web, f"https://raw.githubusercontent.com/{owner}/{name}/main/"


def test_homepage_is_the_catalog_repository_and_the_readme_names_it():
    web, _ = repositoryUrls()
    assert cmakeSetting("EXTENSION_HOMEPAGE").split("#")[0] == web
    assert web.rsplit("/", 1)[1].startswith("Slicer")  # the index wants Slicer<Name> repositories
    assert web in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", ["EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"])
def test_icon_and_screenshots_are_files_of_this_repository(setting):
    _, raw = repositoryUrls()
    urls = cmakeSetting(setting).split()
    assert urls, f"{setting} is empty"
    for url in urls:
        assert url.startswith(raw), f"{url} is not in {raw}"
        path = REPO / url[len(raw):]
        assert path.is_file(), f"{url}: {path} does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def test_contributors_are_name_and_organisation_in_cmake_and_both_modules():
    contributors = [c.strip() for c in cmakeSetting("EXTENSION_CONTRIBUTORS").split(",")]
    assert contributors and all(CONTRIBUTOR.match(c) for c in contributors), contributors
    for module in MODULES:
        source = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
        listed = re.search(r"self\.parent\.contributors = \[([^\]]*)\]", source).group(1)
        assert [c.strip().strip('"') for c in listed.split(",")] == contributors, module
