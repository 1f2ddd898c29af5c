"""The wheel must contain every package: the folder mapping makes that a hand-kept list."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    mapping: dict[str, str] = config["setuptools"]["package-dir"]
    listed = set(config["setuptools"]["packages"])
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_agent_install_does_not_need_collector_libraries() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = {dep.split(">")[0].split("[")[0].lower() for dep in config["dependencies"]}
    assert base <= {"msgspec", "paho-mqtt", "psutil"}
