"""The decision store: every run, sequence, step and decision of the engine in SQL.

SQLite by default (`cascade.db` in the per-user folder `user_dir()`), PostgreSQL by URL (`postgresql+psycopg://...`).
Callers never import SQLAlchemy: they use

- `resolve_url(cli_url, no_store=..., policy=...)`: which store, or None for off (`default_url()` when
  nothing names one);
- `Store.open(url)` -> `Store`; `store.start_run(policy, engine_info(engine))` -> `RunLogger`;
- `RunLogger.start_sequence / log_step / step_logger / end_sequence / log_generation / finish`;
- `cascade.store.queries` for reading, `cascade.store.migrate` for `upgrade / current / history`;
- `cascade.store.cli.add_parser(subparsers)` for `cascade db ...` and `cascade runs ...`.
"""

from cascade.home import HOME_ENV, user_dir
from cascade.store.db import mask_url
from cascade.store.migrate import current, history, upgrade
from cascade.store.runinfo import engine_info
from cascade.store.runlog import RunLogger
from cascade.store.urls import ENV_VAR, default_url, resolve_url
from cascade.store.writer import Store

__all__ = [
    "ENV_VAR",
    "HOME_ENV",
    "RunLogger",
    "Store",
    "current",
    "default_url",
    "engine_info",
    "history",
    "mask_url",
    "resolve_url",
    "upgrade",
    "user_dir",
]
