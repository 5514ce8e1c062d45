"""Which store a command writes to.

Precedence: `--no-store` (off) > `--store URL` > the policy's `store.enabled: false` (off)
> `CASCADE_STORE` > the policy's `store.url` > `cascade.db` in the per-user data folder
(`user_dir()`: `$CASCADE_HOME`, else `$XDG_DATA_HOME/cascade` or `~/.local/share/cascade` on
Linux, `~/Library/Application Support/cascade` on macOS, `%LOCALAPPDATA%\\cascade` on Windows),
so every run on this machine lands in one database wherever the command runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cascade.home import user_dir

ENV_VAR = "CASCADE_STORE"
DB_FILE = "cascade.db"


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file (`sqlite:////abs/path` on POSIX, `sqlite:///C:/...` on Windows)."""
    return f"sqlite:///{path.as_posix()}"


def default_url(env: Mapping[str, str] | None = None, *, create: bool = True) -> str:
    """`sqlite:///<user_dir()>/cascade.db`; with `create`, the folder is made if missing (as simonw/llm does).

    A folder that cannot be made is left to `Store.open`, which names it in its error.
    """
    folder = user_dir(env)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
    return sqlite_url(folder / DB_FILE)


def resolve_url(
    cli_url: str | None = None,
    *,
    no_store: bool = False,
    policy: Any = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The store URL to use, or None when logging is off.

    `policy` is a `cascade.policy.Policy` (its `store.url` / `store.enabled` are read) or None.
    The default (`default_url()`) creates the per-user folder when it picks it.
    """
    if no_store:
        return None
    if cli_url:
        return cli_url
    spec = getattr(policy, "store", None)
    if spec is not None and not spec.enabled:
        return None
    env_url = (os.environ if env is None else env).get(ENV_VAR, "").strip()
    if env_url:
        return env_url
    if spec is not None and spec.url:
        return spec.url
    return default_url(env)


def absolute_url(url: str) -> str:
    """A relative SQLite path made absolute (the app may run elsewhere); other URLs unchanged."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001  the app reports a bad URL in the page
        return url
    db = parsed.database
    if parsed.get_backend_name() == "sqlite" and db and db != ":memory:" and not db.startswith("file:"):
        return parsed.set(database=str(Path(db).expanduser().absolute())).render_as_string(hide_password=False)
    return url
