"""mypy over the core modules and the store ([tool.mypy] in pyproject.toml says which).

The cache lives in .cache/mypy (git-ignored): a cold run takes ~20 s, a warm one ~2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: ./scripts/test.sh runs it, --fast skips it

ROOT = Path(__file__).resolve().parents[1]
CORE = ("decode", "verify", "schedules", "rules.py", "drafter.py", "policy.py", "plugins.py", "hookspecs.py")


def test_mypy_config_covers_the_core_modules():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    files = set(config["files"])
    assert {f"cascade/{m}" for m in CORE} <= files and "cascade/store" in files
    assert "migrations" in " ".join(config["exclude"])
    assert all((ROOT / f).exists() for f in files), "a file in [tool.mypy] files no longer exists"


def test_core_modules_type_check():
    if os.environ.get("CI"):  # CI installs the test extra: a missing mypy there is a broken setup, not a skip
        import mypy  # noqa: F401
    else:
        pytest.importorskip("mypy", reason="mypy comes with the test extra: pip install -e '.[test]'")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"mypy found errors:\n{out.stdout}{out.stderr}"
