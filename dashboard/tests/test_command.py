"""`cascade dashboard`: registered through the plugin hook, headless on 127.0.0.1, the URL printed, the
store's password never printed nor passed on the command line."""

from __future__ import annotations

import argparse
import os

import pytest

from cascade_dashboard import command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cascade")
    command.add_parser(p.add_subparsers())
    return p


def test_the_plugin_adds_the_command_through_register_commands():
    from cascade.plugins import add_commands

    p = argparse.ArgumentParser(prog="cascade")
    added = add_commands(p.add_subparsers())
    assert added.get("dashboard") == "dashboard"


def test_defaults_and_argv():
    args = _parser().parse_args(["dashboard"])
    assert (args.host, args.port, args.store) == ("127.0.0.1", 8501, None)
    argv = command.streamlit_argv("127.0.0.1", 9000)
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("app.py")
    flags = dict(zip(argv[5::2], argv[6::2]))
    assert flags["--server.headless"] == "true" and flags["--server.address"] == "127.0.0.1"
    assert flags["--server.port"] == "9000" and flags["--runner.magicEnabled"] == "false"


def test_store_goes_through_the_environment_and_the_password_is_masked(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: seen.update(argv=argv, env=env))
    args = _parser().parse_args(["dashboard", "--store", "postgresql+psycopg://me:s3cret@db/cascade", "--port", "9001"])
    args.func(args)
    out = capsys.readouterr().out
    assert "http://localhost:9001" in out and "s3cret" not in out and "***" in out
    assert not any("s3cret" in a for a in seen["argv"])
    assert seen["env"][command.STORE_ENV] == "postgresql+psycopg://me:s3cret@db/cascade"


def test_default_store_is_cascade_runs_and_relative_sqlite_becomes_absolute(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: seen.update(env=env))
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    monkeypatch.delenv("CASCADE_STORE", raising=False)
    args = _parser().parse_args(["dashboard"])
    args.func(args)
    assert seen["env"][command.STORE_ENV] == f"sqlite:///{tmp_path / 'cascade.db'}"
    monkeypatch.chdir(tmp_path)
    from cascade.store.urls import absolute_url

    assert absolute_url("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"


def test_bad_port_is_a_user_error():
    from cascade.errors import CascadeError

    args = _parser().parse_args(["dashboard", "--port", "70000"])
    with pytest.raises(CascadeError, match="--port"):
        args.func(args)
