"""The wheel: it ships every module, the Alembic scripts mapped in from the top-level
`migrations/` folder, and `py.typed`; and `cascade db upgrade` works from it alone.

Built once per session from a copy of the sources (nothing is written into the checkout).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from cascade.store import migrate

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "cascade", "migrations")  # what the build reads


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    # with the venv's setuptools when it has one (no download), else in an isolated build env
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(out), str(src)])
    (built,) = out.glob("cascade_llm-*.whl")
    return built


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_ships_migrations_templates_and_py_typed(wheel):
    names = _names(wheel)
    revisions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("000*_*.py"))
    assert revisions, "no revision files in migrations/versions"
    for rev in revisions:
        assert f"cascade/store/migrations/versions/{rev}" in names
    for name in ("env.py", "script.py.mako", "__init__.py", "versions/__init__.py"):
        assert f"cascade/store/migrations/{name}" in names
    assert "cascade/py.typed" in names
    assert not any(n.startswith("migrations/") for n in names), "migrations/ must ship inside the package only"


def test_wheel_ships_every_module_of_the_package(wheel):
    """Catches a package folder missing from the explicit list in pyproject.toml."""
    names = _names(wheel)
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cascade").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(m for m in modules if m not in names)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"


def test_db_upgrade_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)])
    # -S: no site processing, so the checkout's editable-install finder (a .pth hook) never loads;
    # the dependencies come from this venv's site-packages, placed *after* the wheel's folder.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    env.pop("PYTHONHOME", None)
    work = tmp_path / "cwd"  # a cwd away from the checkout, so `cascade/` there is not importable
    work.mkdir()

    def python(*args: str) -> str:
        return _run([sys.executable, "-S", *args], cwd=work, env=env).stdout

    where = python("-c", "import cascade, cascade.store.migrate as m; print(cascade.__file__); print(m.MIGRATIONS_DIR)")
    cascade_file, migrations_dir = where.split()
    assert Path(cascade_file).is_relative_to(target), cascade_file
    assert Path(migrations_dir) == target / "cascade" / "store" / "migrations"

    db = work / "x.db"
    out = python("-m", "cascade.cli", "db", "upgrade", "--store", f"sqlite:///{db}")
    assert f"-> {migrate.head()}" in out, out
    with sqlite3.connect(db) as conn:
        (rev,) = conn.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert rev == migrate.head()
    assert {"runs", "sequences", "steps", "decisions"} <= tables
