"""cascade's per-user folder (`$CASCADE_HOME`, else the platform's user data folder): the default store and the
adaptive schedule's cached cost tables live there."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

HOME_ENV = "CASCADE_HOME"
APP = "cascade"


def user_dir(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """cascade's per-user data folder (absolute; not created here).

    `$CASCADE_HOME` when set, else the platform's user data folder plus `cascade`.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home = env.get(HOME_ENV, "").strip()
    if home:
        return Path(home).expanduser().absolute()
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or env.get("APPDATA")
        root = Path(base) if base else Path.home() / "AppData" / "Local"
    elif platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:  # Linux and other Unixes: the XDG base directory spec (a relative XDG_DATA_HOME is ignored)
        xdg = env.get("XDG_DATA_HOME", "").strip()
        root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return (root / APP).absolute()
