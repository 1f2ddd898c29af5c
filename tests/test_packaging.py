"""The package layout: import names are paths on disk, and the agent installs alone."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


PARTS = ("wire", "agent", "collector", "firmware_sim")


def test_import_names_are_paths_on_disk() -> None:
    """``campuswatch.collector.x`` is ``campuswatch/collector/x.py``: a committed symlink to
    the top-level folder, so editors, mypy and import-graph tools need no mapping."""
    for part in PARTS:
        link = ROOT / "campuswatch" / part
        assert link.is_symlink(), f"campuswatch/{part} must be a symlink to ../{part}"
        assert link.resolve() == (ROOT / part).resolve()


def test_setuptools_finds_every_package_folder() -> None:
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=["campuswatch*"]))
    expected = {"campuswatch"}
    for part in PARTS:
        for init in (ROOT / part).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / part)
            expected.add(".".join(["campuswatch", part, *relative.parts]))
    assert found == expected


def test_a_clean_checkout_imports_without_an_install() -> None:
    """As ``PYTHONPATH=. python -c 'import campuswatch.collector.service'`` from a clone:
    ``-S`` keeps the editable install's finder out, only the libraries' folder is added."""
    libraries = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path[:0] = ['.', {libraries!r}]; "
        "import campuswatch.collector.service as m; print(m.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(ROOT / "campuswatch" / "collector" / "service.py")


def test_agent_install_does_not_need_collector_libraries() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = {dep.split(">")[0].split("[")[0].lower() for dep in config["dependencies"]}
    assert base <= {"msgspec", "paho-mqtt", "psutil"}


def test_the_wheel_carries_the_shipped_rule_pack(tmp_path: Path) -> None:
    """A collector installed with ``pip install campuswatch[collector]`` (no clone) loads the
    shipped rules: the wheel holds ``campuswatch/rules`` and ``default_rules_dir`` finds it
    beside the installed package, not beside a checkout that is not there."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("campuswatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rules").rglob("*.yaml")}
    assert shipped, "the checkout has no rules to ship"
    assert {f"campuswatch/{name}" for name in shipped} <= names
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path / 'site')!r}]; "
        "from campuswatch.collector.alerting import default_rules_dir; print(default_rules_dir())"
    )
    libraries = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.append({libraries!r}); {code}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "site" / "campuswatch" / "rules")
