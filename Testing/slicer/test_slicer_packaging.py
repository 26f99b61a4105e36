"""Packaging consistency: CMake lists, .ui files against the module code, catalog entry, icons."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slicer

REPO = Path(__file__).resolve().parents[2]
MODULES = ("AsymSeg", "AsymSegTraining")


def loadUpdater():
    spec = importlib.util.spec_from_file_location("update_cmake_lists", REPO / "Testing" / "update_cmake_lists.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


updater = loadUpdater()


# ------------------------------------------------------------------------------ CMake lists
@pytest.mark.parametrize("moduleName", MODULES)
def test_every_file_of_a_module_folder_is_listed_in_its_cmakelists(moduleName):
    moduleDir = REPO / moduleName
    text = (moduleDir / "CMakeLists.txt").read_text()
    scripts = updater.cmakeList(text, "MODULE_PYTHON_SCRIPTS", moduleName)
    resources = updater.cmakeList(text, "MODULE_PYTHON_RESOURCES", moduleName)
    onDisk = [f for f in updater.moduleFiles(moduleDir) if f != "CMakeLists.txt"]
    notListed = [f for f in onDisk if f not in (scripts if f.endswith(".py") else resources)]
    absent = [f for f in scripts + resources if f not in onDisk]
    hint = " (engine files: run python Testing/update_cmake_lists.py)"
    assert not notListed, f"{moduleName}/CMakeLists.txt does not list: " + ", ".join(notListed) + hint
    assert not absent, f"{moduleName}/CMakeLists.txt lists missing files: " + ", ".join(absent) + hint
    assert all(s.endswith(".py") for s in scripts) and not any(r.endswith(".py") for r in resources)
    assert len(set(scripts)) == len(scripts) and len(set(resources)) == len(resources)
    assert f"{moduleName}.py" in scripts
    assert {f"Resources/UI/{moduleName}.ui", f"Resources/Icons/{moduleName}.png"} <= set(resources)
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_the_engine_ships_inside_the_asymseg_module():
    text = (REPO / "AsymSeg" / "CMakeLists.txt").read_text()
    scripts = updater.cmakeList(text, "MODULE_PYTHON_SCRIPTS", "AsymSeg")
    assert {"asymseg/__init__.py", "asymseg/__main__.py", "asymseg/cli.py"} <= set(scripts)


def test_a_file_left_out_is_named(tmp_path):
    """The check names the missing file (a new engine module not yet listed)."""
    module = tmp_path / "AsymSeg"
    (module / "asymseg").mkdir(parents=True)
    (module / "asymseg" / "__init__.py").write_text("")
    (module / "asymseg" / "new_module.py").write_text("")
    (module / "CMakeLists.txt").write_text(
        "set(MODULE_PYTHON_SCRIPTS\n  # BEGIN GENERATED ENGINE_SCRIPTS\n  asymseg/__init__.py\n"
        "  # END GENERATED ENGINE_SCRIPTS\n  )\nset(MODULE_PYTHON_RESOURCES\n"
        "  # BEGIN GENERATED ENGINE_RESOURCES\n  # END GENERATED ENGINE_RESOURCES\n  )\n")
    listed = updater.cmakeList((module / "CMakeLists.txt").read_text(), "MODULE_PYTHON_SCRIPTS", "AsymSeg")
    missing = [f for f in updater.moduleFiles(module) if f.endswith(".py") and f not in listed]
    assert missing == ["asymseg/new_module.py"]
    updated = updater.updatedText(module / "CMakeLists.txt", module)
    assert "  asymseg/new_module.py\n" in updated
    assert updater.cmakeList(updated, "MODULE_PYTHON_SCRIPTS", "AsymSeg") == ["asymseg/__init__.py",
                                                                            "asymseg/new_module.py"]
    with pytest.raises(ValueError, match="markers '# BEGIN GENERATED NOPE'"):
        updater.replaceBlock("", "NOPE", [])


def test_engine_lists_are_current():
    assert updater.main(["--check"]) == 0, "run: python Testing/update_cmake_lists.py"


def test_root_cmakelists_names_the_project_after_the_catalog_entry_and_adds_both_modules():
    text = (REPO / "CMakeLists.txt").read_text()
    project = re.search(r"^project\((\w+)\)", text, re.M).group(1)
    assert project == "AsymSeg" and (REPO / f"{project}.json").is_file()
    for module in MODULES:
        assert f"add_subdirectory({module})" in text
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key} ", text), key
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', text)
    order = [text.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                     "add_subdirectory(AsymSeg)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                     "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)
    assert (REPO / "LICENSE").is_file()  # the extension index requires one at the root
    assert (REPO / "Testing" / "CMakeLists.txt").is_file()


# The catalog-entry schema v1.0.1 (Slicer/Slicer Schemas/): allowed keys and their types.
CATALOG_SCHEMA = {
    "$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
    "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int,
}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def test_catalog_entry_follows_schema_v1_0_1():
    entry = json.loads((REPO / "AsymSeg.json").read_text())
    assert set(entry) <= set(CATALOG_SCHEMA), f"keys outside the schema: {set(entry) - set(CATALOG_SCHEMA)}"
    assert CATALOG_REQUIRED <= set(entry)
    for key, value in entry.items():
        assert type(value) is CATALOG_SCHEMA[key], key
    assert entry["$schema"].endswith("/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] == "Segmentation"
    assert entry["build_dependencies"] == ["PyTorch"]
    assert all(isinstance(d, str) for d in entry["build_dependencies"])
    assert entry.get("tier", 5) in (1, 3, 5)
    assert entry.get("scm_type", "git") in ("git", "local")
    assert re.match(r"^(https|git)://", entry["scm_url"])
    cmake = (REPO / "CMakeLists.txt").read_text()
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', cmake).group(1).split()
    assert depends == entry["build_dependencies"]


def pngSize(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("moduleName", MODULES)
def test_icons_are_128_pixel_pngs(moduleName):
    assert pngSize(REPO / moduleName / "Resources" / "Icons" / f"{moduleName}.png") == (128, 128)


# ------------------------------------------------------------------------------ .ui files
SLICER_WIDGETS = {"qMRMLWidget", "ctkCollapsibleButton", "qMRMLNodeComboBox", "ctkPathLineEdit",
                  "ctkSliderWidget", "qMRMLSegmentSelectorWidget"}


def uiTree(moduleName: str) -> ET.Element:
    return ET.parse(REPO / moduleName / "Resources" / "UI" / f"{moduleName}.ui").getroot()


def moduleSource(moduleName: str) -> str:
    return (REPO / moduleName / f"{moduleName}.py").read_text()


def parameterFields(moduleName: str) -> dict[str, str]:
    """Field name -> annotation text of the module's @parameterNodeWrapper class."""
    tree = ast.parse(moduleSource(moduleName))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{moduleName}ParameterNode":
            assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list)
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{moduleName}.py has no {moduleName}ParameterNode class")


@pytest.mark.parametrize("moduleName", MODULES)
def test_every_ui_widget_the_code_uses_exists_in_the_ui_file(moduleName):
    root = uiTree(moduleName)
    names = {w.get("name") for w in root.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", moduleSource(moduleName)))
    assert used, "the module code uses no widget?"
    assert not used - names, f"{moduleName}.py uses widgets missing from the .ui: {sorted(used - names)}"
    assert root.find("class").text == moduleName
    assert root.find("widget").get("class") == "qMRMLWidget"


@pytest.mark.parametrize("moduleName", MODULES)
def test_ui_parameter_bindings_name_parameter_node_fields(moduleName):
    fields = parameterFields(moduleName)
    bound = {}
    for widget in uiTree(moduleName).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    assert bound
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"{moduleName}.ui binds unknown parameters: {unknown}"
    assert len(set(bound.values())) == len(bound), "a parameter is bound to two widgets"
    for widget in uiTree(moduleName).iter("widget"):
        if widget.get("class") == "qMRMLNodeComboBox":
            assert widget.get("name") in bound, f"{widget.get('name')} is not bound to the parameter node"
            types = [s.text for s in widget.find("property[@name='nodeTypes']").iter("string")]
            # the parameter node sets a selector's node types from the annotation: keep both the same
            annotated = re.findall(r"vtkMRML\w+", fields[bound[widget.get("name")]])
            assert sorted(annotated) == sorted(types), (widget.get("name"), annotated, types)


@pytest.mark.parametrize("moduleName", MODULES)
def test_node_selectors_get_the_scene_and_custom_widgets_are_declared(moduleName):
    root = uiTree(moduleName)
    combos = {w.get("name") for w in root.iter("widget") if w.get("class").startswith("qMRML")
              and w.get("class") != "qMRMLWidget"}
    connected = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)" and c.find("sender").text == moduleName}
    assert combos and combos == connected
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget") if not w.get("class").startswith("Q")}
    assert used <= declared <= SLICER_WIDGETS


@pytest.mark.parametrize("moduleName", MODULES)
def test_module_file_has_the_four_slicer_classes(moduleName):
    classes = {n.name: n for n in ast.parse(moduleSource(moduleName)).body if isinstance(n, ast.ClassDef)}
    for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "ScriptedLoadableModuleWidget"),
                         ("Logic", "ScriptedLoadableModuleLogic"), ("Test", "ScriptedLoadableModuleTest")):
        node = classes[moduleName + suffix]
        assert base in {ast.unparse(b) for b in node.bases}
    assert 'loadUI(self.resourcePath("UI/' + moduleName + '.ui"))' in moduleSource(moduleName)


# ------------------------------------------------------------------------------ CMake configure
SLICER_STAND_IN = r"""
# Stands in for SlicerConfig.cmake: the macros check what the real ones would package.
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/use.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
set(Slicer_LAUNCH_COMMAND "")
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(file ${MY_SCRIPTS} ${MY_RESOURCES})
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${file}")
      message(FATAL_ERROR "${MY_NAME}: listed file does not exist: ${file}")
    endif()
  endforeach()
  list(LENGTH MY_SCRIPTS nScripts)
  list(LENGTH MY_RESOURCES nResources)
  message(STATUS "module ${MY_NAME}: ${nScripts} scripts, ${nResources} resources")
endfunction()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  message(STATUS "self-test ${MY_SCRIPT}")
endfunction()
"""


def test_cmake_configures_the_extension_with_a_slicer_stand_in(tmp_path):
    import shutil
    import subprocess
    import sys

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    slicerDir = tmp_path / "slicer"
    slicerDir.mkdir()
    (slicerDir / "SlicerConfig.cmake").write_text(SLICER_STAND_IN)
    (slicerDir / "empty.cmake").write_text("")
    (slicerDir / "use.cmake").write_text("enable_testing()\n")  # UseSlicer includes CTest
    completed = subprocess.run(
        [cmake, "-S", str(REPO), "-B", str(tmp_path / "build"), f"-DSlicer_DIR={slicerDir}", "-DBUILD_TESTING=ON",
         f"-DPYTHON_EXECUTABLE={sys.executable}"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    out = completed.stdout
    assert re.search(r"module AsymSeg: \d+ scripts, \d+ resources", out)
    assert "module AsymSegTraining: 7 scripts, 2 resources" in out
    assert "self-test AsymSeg.py" in out and "self-test AsymSegTraining.py" in out
    tests = subprocess.run(["ctest", "-N"], cwd=tmp_path / "build", capture_output=True, text=True, timeout=60)
    assert "py_AsymSegLib" in tests.stdout
