"""cascade-dashboard: a Streamlit dashboard over cascade's decision store, started by `cascade dashboard`.

This module is the plugin's entry point (group `cascade`, name `dashboard`): it only adds the
command, through `register_commands`; Streamlit is imported when the command runs, not before.
"""

from __future__ import annotations

import argparse

from cascade import hookimpl


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    from cascade_dashboard.command import add_parser

    add_parser(subparsers)
