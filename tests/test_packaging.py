"""Hearth installs under one `hearth` namespace, with every sub-package, and says its version."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed_under_hearth():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"hearth." + str(init.parent.relative_to(ROOT)).replace("/", ".")
               for top in setuptools["package-dir"].values() for init in (ROOT / top).rglob("__init__.py")}
    assert folders == set(setuptools["packages"])


def test_the_version_is_the_distribution_s():
    done = subprocess.run([sys.executable, "-m", "hearth.server.cli", "--version"], capture_output=True, text=True,
                          cwd="/", check=True)
    assert done.stdout.strip() == f"hearth {metadata.version('hearth')}"


def test_no_generic_top_level_package_is_importable_from_elsewhere():
    for name in ("server", "search", "storage", "capability", "subscriptions", "interactions", "conformance"):
        found = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, cwd="/")
        assert found.returncode != 0, name
