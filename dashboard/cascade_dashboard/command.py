"""`cascade dashboard [--store URL] [--port N] [--host H]`: Streamlit, headless, over a store, read-only.

The store URL reaches the app through the environment (`STORE_ENV`), never the command line
(other users can read a process's arguments); what is printed has the password masked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
STORE_ENV = "CASCADE_DASHBOARD_STORE"
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="inspect runs and tune α in a Streamlit dashboard (read-only)")
    p.add_argument(
        "--store",
        metavar="URL",
        help="store to show (default: $CASCADE_STORE, else cascade.db in $CASCADE_HOME or the user "
        "data folder, as `cascade run`)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default: {DEFAULT_PORT})")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default: {DEFAULT_HOST}, this machine only; 0.0.0.0 exposes it)",
    )
    p.set_defaults(func=cmd_dashboard)


def streamlit_argv(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--runner.magicEnabled",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def cmd_dashboard(args: argparse.Namespace) -> int:
    from cascade import CascadeError
    from cascade.store import mask_url, resolve_url
    from cascade.store.urls import absolute_url

    if not 0 < args.port < 65536:
        raise CascadeError(f"--port must be between 1 and 65535, got {args.port}")
    url = absolute_url(resolve_url(args.store) or "")
    env = {**os.environ, STORE_ENV: url}
    shown = "localhost" if args.host in ("127.0.0.1", "::1") else args.host
    print(f"cascade dashboard: store {mask_url(url)} (read-only)", flush=True)
    print(f"cascade dashboard: http://{shown}:{args.port}  (Ctrl-C stops it)", flush=True)
    argv = streamlit_argv(args.host, args.port)
    os.execve(argv[0], argv, env)  # this process becomes Streamlit: Ctrl-C and kill reach it directly
    return 0  # not reached
