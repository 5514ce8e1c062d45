"""Alembic environment of the decision store, shipped in the wheel as `cascade.store.migrations`.

The folder sits at the repository root (the design card's layout) and pyproject.toml maps
it into the package (`[tool.setuptools.package-dir]`), so `cascade.store.migrate` finds it
through `importlib.resources` whether cascade runs from a checkout, an editable install or
a wheel. This file makes it a regular package; Alembic skips `__init__.py` when it scans.
"""
