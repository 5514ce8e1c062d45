"""The `cascade` command line: the host. Its subcommands come through the `register_commands`
hook (cascade's own from `cascade.commands`, then any plugin's).

User errors (`CascadeError`: a bad policy, prompt, plugin, model path, a plugin that raises)
print one clear `error: ...` line on stderr and exit with status 2, never a traceback
(`cascade --debug ...` adds it). Output into a closed pipe (`cascade runs show 1 | head`)
ends quietly with status 141, as SIGPIPE would. Bare `cascade` prints the help on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import sys
import traceback

from cascade.errors import CascadeError

BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a command killed by a closed pipe


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def version_text() -> str:
    """`cascade X (torch Y, transformers Z, Python W)`, from installed metadata (nothing is imported)."""
    return (
        f"cascade {_version('cascade-llm')} (torch {_version('torch')}, "
        f"transformers {_version('transformers')}, Python {platform.python_version()})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; every subcommand comes through the `register_commands` hook, cascade's own
    (`cascade.commands`) first. Plugins that cannot load leave cascade's own commands working."""
    from cascade import commands
    from cascade.plugins import add_commands, registry

    parser = argparse.ArgumentParser(prog="cascade", description="speculative cascades for HF causal LMs")
    parser.add_argument(
        "--version",
        action="version",
        version=version_text(),
        help="print cascade's version (and torch's, transformers') and exit",
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the full traceback as well as the one-line message"
    )
    sub = parser.add_subparsers(dest="cmd", required=False)  # bare `cascade` prints the help (main)
    try:
        reg = registry()
    except CascadeError as exc:  # a broken plugin: cascade's own commands still work (and say why on use)
        print(f"warning: plugins not loaded: {exc}", file=sys.stderr)
        commands.register_commands(subparsers=sub)
        return parser
    add_commands(sub, reg, builtin=commands)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at devnull after a BrokenPipeError, so the interpreter's last flush cannot raise again
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (tests): nothing to redirect
        pass


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:  # answered from metadata: no plugin, no torch
        print(version_text())
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # bare `cascade`: the whole help (not argparse's one line), status 2
        parser.print_help(sys.stderr)
        return 2
    try:
        status = args.func(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return status
    except BrokenPipeError:  # `cascade runs show 1 | head`: the reader left; stop quietly like other CLIs
        _quiet_stdout()
        return BROKEN_PIPE_STATUS
    except CascadeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
