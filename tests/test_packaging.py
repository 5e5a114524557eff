"""The project's install files agree with each other."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\s\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _conda_names() -> set[str]:
    names, in_pip = set(), False
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        item = re.match(r"^(\s*)-\s+(.+?)\s*$", line)
        if not item:
            continue
        indent, value = len(item.group(1)), item.group(2)
        if value.startswith("pip:"):
            in_pip = True
            continue
        if in_pip and indent <= 2:
            in_pip = False
        if value.startswith("-e") or value in ("pip",) or value.startswith("python"):
            continue
        names.add(_name(value))
    return names


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("test", "docs"):                   # environment.yml installs both extras' packages
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    assert _conda_names() == wanted


def test_torch_is_pinned_to_the_cpu_build_everywhere():
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()


def test_ci_runs_make_test_with_everything_required():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "FARMER_REQUIRE_ALL=1" in ci
    assert "dataset-fashion-mnist" in ci and "chromium" in ci and "apt-get update" in ci
