"""Packaging: hubconf.py lists every runtime dependency, the package ships py.typed, classifiers and
project URLs are declared, and the version lives in one place (src/hilovit/__init__.py)."""

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest

import hilovit

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_hubconf_lists_every_runtime_dependency():
    tree = ast.parse((ROOT / "hubconf.py").read_text())
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "dependencies" for t in node.targets))
    modules_of = importlib.metadata.packages_distributions()  # import name -> the distributions providing it
    provided = {_dist_name(d) for module in listed for d in modules_of.get(module, [])}
    unknown = [m for m in listed if m not in modules_of]
    assert not unknown, f"hubconf.dependencies names modules no installed distribution provides: {unknown}"
    required = {_dist_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert provided == required, (sorted(required - provided), sorted(provided - required))


def test_py_typed_classifiers_and_urls():
    assert (ROOT / "src" / "hilovit" / "py.typed").is_file()
    cfg = _pyproject()
    assert "py.typed" in cfg["tool"]["setuptools"]["package-data"]["hilovit"]
    classifiers = cfg["project"]["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("License :: OSI Approved :: Apache") for c in classifiers)
    assert all(u.startswith("https://") for u in cfg["project"]["urls"].values()) and cfg["project"]["urls"]


def test_version_lives_in_one_place(monkeypatch):
    cfg = _pyproject()
    assert "version" not in cfg["project"] and "version" in cfg["project"]["dynamic"]
    assert cfg["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hilovit.__version__"}
    setuptools_config = pytest.importorskip("setuptools.config.pyprojecttoml")
    monkeypatch.chdir(ROOT)  # setuptools finds src/ from the project root
    expanded = setuptools_config.read_configuration("pyproject.toml", expand=True)
    assert expanded["project"]["version"] == hilovit.__version__  # what a build writes into the metadata
    try:
        installed = importlib.metadata.version("hilovit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("hilovit is not installed: no metadata version to compare")
    assert installed == hilovit.__version__
