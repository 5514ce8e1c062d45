"""The plugin manager: entry points, duplicates, restriction by environment, listing."""

import json
import subprocess
import sys
import types

import pytest

from cascade.errors import PluginError
from cascade.hookspecs import hookimpl
from cascade.plugins import build_registry


def make_plugin(name, drafters=(), rules=(), boom=False):
    mod = types.ModuleType(name)

    if drafters:
        @hookimpl
        def register_drafters(register):
            if boom:
                raise RuntimeError("kaboom")
            for d in drafters:
                register(d, type(d, (), {"name": d, "deterministic": True, "Options": None}))
        mod.register_drafters = register_drafters
    if rules:
        @hookimpl
        def register_rules(register):
            for r in rules:
                register(r, object)
        mod.register_rules = register_rules
    return mod


def test_builtin_rules_and_installed_drafters_go_through_the_hooks():
    reg = build_registry()
    names = {p.name: p for p in reg.plugins}
    assert {"cascade-builtin", "hf-model", "ngram"} <= set(names)
    assert names["hf-model"].hooks == ("register_drafters",)
    assert names["cascade-builtin"].rules == ("none", "chow", "diff", "opt", "token_v1", "token_v2", "token_v3")
    assert set(reg.drafters) >= {"hf-model", "ngram"}


def test_in_process_plugin_registers_and_is_listed():
    reg = build_registry(extra=[("mine", make_plugin("mine", drafters=["eagle"], rules=["learned"]))])
    assert "eagle" in reg.drafters and "learned" in reg.rules
    assert [p for p in reg.plugins if p.name == "mine"][0].hooks == ("register_drafters", "register_rules")


def test_duplicate_name_names_both_plugins():
    with pytest.raises(PluginError) as exc:
        build_registry(extra=[("copycat", make_plugin("copycat", drafters=["ngram"]))])
    assert "'ngram'" in str(exc.value) and "'copycat'" in str(exc.value)
    with pytest.raises(PluginError, match="'cascade-builtin'.*'rules2'"):
        build_registry(extra=[("rules2", make_plugin("rules2", rules=["chow"]))])


def test_plugin_that_raises_in_its_hook():
    with pytest.raises(PluginError, match="plugin 'bad' raised in register_drafters: RuntimeError: kaboom"):
        build_registry(extra=[("bad", make_plugin("bad", drafters=["x"], boom=True))])


def test_environment_restricts_entry_points(monkeypatch):
    monkeypatch.setenv("CASCADE_PLUGINS", "ngram")
    reg = build_registry()
    assert "ngram" in reg.drafters and "hf-model" not in reg.drafters
    assert "none" in reg.rules  # the built-in rules always load
    with pytest.raises(PluginError, match="unknown drafter 'hf-model'; installed: ngram"):
        reg.drafter("hf-model")


def test_cli_lists_plugins_as_json_and_table():
    out = subprocess.run([sys.executable, "-m", "cascade.cli", "plugins", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["ngram"]["version"] == "0.1.0" and names["ngram"]["hooks"] == ["register_drafters"]
    table = subprocess.run([sys.executable, "-m", "cascade.cli", "plugins"], capture_output=True, text=True).stdout
    assert "hf-model" in table and "register_drafters" in table and "version" in table


def test_every_hookspec_is_documented_in_readme():
    from pathlib import Path

    from cascade import hookspecs

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ("register_drafters", "register_rules"):
        assert getattr(hookspecs, name).__doc__
        assert name in readme, f"hook {name} is not documented in README.md"
