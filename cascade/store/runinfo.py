"""What a run row records about where it ran: the process, package versions, git commit, engine."""

from __future__ import annotations

import os
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("cascade-llm", "torch", "transformers", "tokenizers", "sqlalchemy")


def hostname() -> str:
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc); None elsewhere or when it is gone.

    Stored with the pid so a reused pid is not mistaken for the run's writer.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, started: int | None) -> bool:
    """Whether the process that wrote a run (same host) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout cascade runs from (None when installed from a wheel or git is absent)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def engine_info(engine: Any) -> dict[str, Any]:
    """device, dtype, target and drafter of a `cascade.decode.engine.Engine` (read by duck typing)."""
    info: dict[str, Any] = {"device": str(engine.device)}
    model = getattr(engine, "target_model", None)
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        info["dtype"] = str(dtype).removeprefix("torch.")
    max_draft = getattr(engine, "max_draft", None)
    if max_draft is not None:
        info["max_draft"] = int(max_draft)
    drafter = getattr(engine, "drafter", None)
    if drafter is not None:
        info["drafter_name"] = getattr(drafter, "name", type(drafter).__name__)
    return info
