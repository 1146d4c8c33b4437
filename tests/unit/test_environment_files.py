"""environment.yml (conda) and pyproject.toml must list the same packages with compatible pins."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {_norm(Requirement(r).name): Requirement(r) for r in reqs}


def _environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip_section:
        if line.startswith("-e"):
            continue
        name, _, version = line.partition("==")
        assert version, f"environment.yml: {line!r} must be pinned with =="
        pins[_norm(name)] = version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_same_package_names():
    assert set(_pyproject_requirements()) == set(_environment_pins())


def test_environment_pins_satisfy_pyproject_specifiers():
    reqs = _pyproject_requirements()
    for name, version in _environment_pins().items():
        assert reqs[name].specifier.contains(Version(version), prereleases=True), (
            f"{name}: environment.yml pins {version}, pyproject.toml asks {reqs[name].specifier}")


def test_environment_installs_the_package_itself():
    assert "-e ." in (ROOT / "environment.yml").read_text()


def test_torch_cpu_wheel_installed_first_in_setup_script():
    script = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert script.index("torch==2.13.0") < script.index('-e ".[book,dev]"')


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert "bash scripts/build_book.sh" in readme


def test_pages_workflow_builds_with_the_book_script_and_deploys_its_output():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    build = wf["jobs"]["build"]["steps"]
    runs = " ".join(s.get("run", "") for s in build)
    assert "bash scripts/build_book.sh" in runs and "download.pytorch.org/whl/cpu" in runs
    uploads = [s for s in build if str(s.get("uses", "")).startswith("actions/upload-pages-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"
    caches = [s for s in build if str(s.get("uses", "")).startswith("actions/cache")]
    assert caches and "_build/.jupyter_cache" in caches[0]["with"]["path"]
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in wf["jobs"]["deploy"]["steps"])
