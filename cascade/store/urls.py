"""Which store a command writes to.

Precedence: `--no-store` (off) > `--store URL` > the policy's `store.enabled: false` (off)
> `CASCADE_STORE` > the policy's `store.url` > `sqlite:///cascade.db` in the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ENV_VAR = "CASCADE_STORE"
DEFAULT_URL = "sqlite:///cascade.db"


def resolve_url(
    cli_url: str | None = None,
    *,
    no_store: bool = False,
    policy: Any = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The store URL to use, or None when logging is off.

    `policy` is a `cascade.policy.Policy` (its `store.url` / `store.enabled` are read) or None.
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
    return DEFAULT_URL
