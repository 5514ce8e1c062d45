"""The plugin manager: entry points, duplicates, restriction by environment, listing,
contract checks at load, tracing, plugin commands, and the hook reference in docs/plugins.md."""

import argparse
import importlib.metadata as md
import inspect
import json
import logging
import re
import subprocess
import sys
import types
from pathlib import Path

import pluggy
import pytest

from cascade import hookspecs, plugins
from cascade.drafter import DrafterBase
from cascade.errors import PluginError
from cascade.hookspecs import hookimpl
from cascade.plugins import add_commands, build_registry
from cascade.rules import NoOptions, RuleBase

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def drafter_class(name):
    """A drafter following the current contract (it never runs here)."""

    class D(DrafterBase):
        deterministic = True
        Options = NoOptions

        def __init__(self, options, context): ...
        def step(self, ask): ...

    D.name = name
    return D


def rule_class(name):
    """A rule following the current contract (it never runs here)."""

    class R(RuleBase):
        reads_q = reads_p = reads_features = False
        alpha_range = (0.0, 1.0)
        Options = NoOptions

        def __init__(self, alpha, options): ...
        def defer(self, q, p, inputs=None): ...

    R.name = name
    return R


def make_plugin(name, drafters=(), rules=(), boom=False):
    mod = types.ModuleType(name)

    if drafters:

        @hookimpl
        def register_drafters(register):
            if boom:
                raise RuntimeError("kaboom")
            for d in drafters:
                register(d, drafter_class(d))

        mod.register_drafters = register_drafters
    if rules:

        @hookimpl
        def register_rules(register):
            for r in rules:
                register(r, rule_class(r))

        mod.register_rules = register_rules
    return mod


@pytest.fixture
def no_entry_points(monkeypatch):
    """Only the built-in plugin and in-process ones: independent of what is installed."""
    monkeypatch.setenv("CASCADE_PLUGINS", "")


def test_builtin_rules_and_installed_drafters_go_through_the_hooks():
    reg = build_registry()
    names = {p.name: p for p in reg.plugins}
    assert {"cascade-builtin", "hf-model", "ngram"} <= set(names)
    assert names["hf-model"].hooks == ("register_drafters",)
    assert names["cascade-builtin"].rules == ("none", "chow", "diff", "opt", "token_v1", "token_v2", "token_v3")
    assert set(reg.drafters) >= {"hf-model", "ngram"}


def test_in_process_plugin_registers_and_is_listed():
    reg = build_registry(extra=[("mine", make_plugin("mine", drafters=["mine_drafter"], rules=["mine_rule"]))])
    assert "mine_drafter" in reg.drafters and "mine_rule" in reg.rules
    assert [p for p in reg.plugins if p.name == "mine"][0].hooks == ("register_drafters", "register_rules")


def test_duplicate_name_names_both_plugins():
    with pytest.raises(PluginError) as exc:
        build_registry(extra=[("copycat", make_plugin("copycat", drafters=["ngram"]))])
    assert "'ngram'" in str(exc.value) and "'copycat'" in str(exc.value)
    with pytest.raises(PluginError, match="'cascade-builtin'.*'rules2'"):
        build_registry(extra=[("rules2", make_plugin("rules2", rules=["chow"]))])


def test_duplicate_between_in_process_plugins(no_entry_points):
    with pytest.raises(PluginError, match="drafter 'x' is registered twice: by plugin 'one' and by plugin 'two'"):
        build_registry(extra=[("one", make_plugin("one", drafters=["x"])), ("two", make_plugin("two", drafters=["x"]))])


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


def test_plugin_that_fails_to_import_is_recorded_not_fatal(monkeypatch, caplog):
    broken = md.EntryPoint(name="broken", value="cascade_no_such_plugin_module", group="cascade")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [broken])
    with caplog.at_level(logging.WARNING, logger="cascade.plugins"):
        reg = build_registry()
    assert reg.failed["broken"].startswith("ModuleNotFoundError")
    assert "plugin broken failed to load" in caplog.text
    assert "none" in reg.rules
    with pytest.raises(PluginError, match=r"unknown drafter 'x'.*failed to load: broken \(ModuleNotFoundError"):
        reg.drafter("x")


@pytest.mark.slow
def test_cli_lists_plugins_as_json_and_table():
    out = subprocess.run([sys.executable, "-m", "cascade.cli", "plugins", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["ngram"]["version"] == "0.3.0" and names["ngram"]["hooks"] == ["register_drafters"]
    table = subprocess.run([sys.executable, "-m", "cascade.cli", "plugins"], capture_output=True, text=True).stdout
    assert "hf-model" in table and "register_drafters" in table and "version" in table


# ---------------------------------------------------------------- collected through pluggy


def test_hookimpl_with_specname_is_collected(no_entry_points):
    mod = types.ModuleType("renamed")

    @hookimpl(specname="register_drafters")
    def my_drafters(register):
        register("renamed-drafter", drafter_class("renamed-drafter"))

    @hookimpl(specname="register_rules")
    def my_rules(register):
        register("renamed-rule", rule_class("renamed-rule"))

    mod.my_drafters, mod.my_rules = my_drafters, my_rules
    reg = build_registry(extra=[("renamed", mod)])
    info = next(p for p in reg.plugins if p.name == "renamed")
    assert info.drafters == ("renamed-drafter",) and info.rules == ("renamed-rule",)
    assert info.hooks == ("register_drafters", "register_rules")
    assert "renamed-drafter" in reg.drafters and "renamed-rule" in reg.rules


def test_trace_logs_every_hook_call(no_entry_points, monkeypatch, caplog):
    monkeypatch.setenv("CASCADE_TRACE_PLUGINS", "1")
    caplog.set_level(logging.DEBUG, logger="cascade.plugins")
    build_registry(extra=[("mine", make_plugin("mine", drafters=["d"], rules=["r"]))])
    calls = [r for r in caplog.records if r.name == "cascade.plugins" and r.levelno == logging.INFO]
    lines = [r.getMessage() for r in calls]
    assert any(line.startswith("hook register_rules(register) -> cascade-builtin") for line in lines), lines
    assert any(line.startswith("hook register_drafters(register) -> mine") for line in lines), lines
    assert any(line.startswith("hook register_rules(register) -> mine") for line in lines), lines
    assert any(line.startswith("hook register_schedules(register) -> cascade-builtin") for line in lines), lines
    assert len(calls) == 4  # one per (plugin, hook) implemented, no more
    done = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(done) == 4 and all(" done in " in m for m in done)


def test_no_trace_without_the_variable(no_entry_points, monkeypatch, caplog):
    monkeypatch.delenv("CASCADE_TRACE_PLUGINS", raising=False)
    caplog.set_level(logging.DEBUG, logger="cascade.plugins")
    build_registry(extra=[("mine", make_plugin("mine", drafters=["d"]))])
    assert not [r for r in caplog.records if r.name == "cascade.plugins"]


# ---------------------------------------------------------------- contract checks at load


def test_misspelt_hook_is_refused_and_an_optional_one_allowed(no_entry_points):
    mod = types.ModuleType("typo")

    @hookimpl
    def register_drafter(register): ...

    mod.register_drafter = register_drafter
    with pytest.raises(
        PluginError,
        match="plugin 'typo' implements 'register_drafter', which is not a cascade hook "
        r"\(known: register_commands, register_drafters, register_predictors, register_rules, register_schedules\)",
    ):
        build_registry(extra=[("typo", mod)])

    newer = types.ModuleType("newer")

    @hookimpl(optionalhook=True)
    def register_schedulers(register): ...

    newer.register_schedulers = register_schedulers
    build_registry(extra=[("newer", newer)])  # a hook of a later cascade: ignored here


def test_old_drafter_signature_is_refused_naming_the_plugin(no_entry_points):
    class OldDrafter:
        name, deterministic, Options = "old", True, NoOptions

        def reset(self, prompt_ids, params=None, generator=None): ...
        def propose(self, context, k, min_confidence=0.0, lookahead=False): ...
        def observe(self, n_accepted): ...

    mod = types.ModuleType("oldplugin")

    @hookimpl
    def register_drafters(register):
        register("old", OldDrafter)

    mod.register_drafters = register_drafters
    with pytest.raises(PluginError) as exc:
        build_registry(extra=[("oldplugin", mod)])
    msg = str(exc.value)
    assert "plugin 'oldplugin'" in msg and "'old'" in msg and "step(DraftRound) -> DraftStep" in msg and "0.3" in msg


def test_a_drafter_of_the_0_2_contract_is_refused_naming_what_changed(no_entry_points):
    class PreviousDrafter:
        name, deterministic, Options = "previous", True, NoOptions

        def reset(self, prompt_ids, params, generator): ...
        def propose(self, context, request): ...
        def observe(self, feedback): ...

    mod = types.ModuleType("previous")
    mod.register_drafters = hookimpl(lambda register: register("previous", PreviousDrafter))
    with pytest.raises(PluginError, match=r"plugin 'previous'.*changed in cascade 0.3.*the engine owns the draft"):
        build_registry(extra=[("previous", mod)])


def test_drafter_missing_methods_is_refused(no_entry_points):
    mod = types.ModuleType("half")

    @hookimpl
    def register_drafters(register):
        register("half", type("Half", (), {"name": "half", "deterministic": True, "Options": NoOptions}))

    mod.register_drafters = register_drafters
    with pytest.raises(
        PluginError, match=r"plugin 'half': drafter 'half' \(Half\) lacks start, step, observe, keep, batched"
    ):
        build_registry(extra=[("half", mod)])


def test_registering_an_instance_is_refused(no_entry_points):
    mod = types.ModuleType("inst")

    @hookimpl
    def register_rules(register):
        register("inst", rule_class("inst")(0.0, None))

    mod.register_rules = register_rules
    with pytest.raises(PluginError, match="plugin 'inst' registers rule 'inst' as .*takes a class"):
        build_registry(extra=[("inst", mod)])


def test_old_rule_signatures_are_refused_naming_the_plugin(no_entry_points):
    class KwargsRule:  # 0.1 style: no Options, cls(alpha, **options)
        name, reads_q, reads_p, alpha_range = "kw", True, True, (0.0, 1.0)

        def __init__(self, alpha, **options): ...
        def defer(self, q, p): ...

    class KwargsWithOptions(KwargsRule):  # Options declared, but still cls(alpha, **options)
        Options = NoOptions

    def plugin_of(cls):
        mod = types.ModuleType("oldrules")

        @hookimpl
        def register_rules(register):
            register("kw", cls)

        mod.register_rules = register_rules
        return mod

    for cls in (KwargsRule, KwargsWithOptions):
        with pytest.raises(PluginError) as exc:
            build_registry(extra=[("oldrules", plugin_of(cls))])
        msg = str(exc.value)
        assert "plugin 'oldrules'" in msg and "'kw'" in msg and "cls(alpha, options)" in msg, msg


# ---------------------------------------------------------------- commands


def command_plugin(name, command, code=0):
    mod = types.ModuleType(name)

    @hookimpl
    def register_commands(subparsers):
        p = subparsers.add_parser(command, help=f"{command} from {name}")
        p.add_argument("--who", default="world")
        p.set_defaults(func=lambda args: print(f"{command} {args.who}") or code)

    mod.register_commands = register_commands
    return mod


def cli_parser():
    parser = argparse.ArgumentParser(prog="cascade")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").set_defaults(func=lambda args: 0)  # a command of cascade's own
    return parser, sub


def test_plugin_adds_a_command_that_runs(no_entry_points, capsys):
    reg = build_registry(extra=[("greeter", command_plugin("greeter", "hello", code=3))])
    assert next(p for p in reg.plugins if p.name == "greeter").hooks == ("register_commands",)
    parser, sub = cli_parser()
    assert add_commands(sub, reg) == {"hello": "greeter"}
    args = parser.parse_args(["hello", "--who", "cascade"])
    assert args.func(args) == 3
    assert capsys.readouterr().out == "hello cascade\n"
    assert "add_parser" not in vars(sub)  # the name check is undone after the hook


def test_duplicate_commands_are_refused_naming_both(no_entry_points):
    reg = build_registry(extra=[("one", command_plugin("one", "hello")), ("two", command_plugin("two", "hello"))])
    with pytest.raises(PluginError, match="command 'hello' is added twice: by plugin 'one' and by plugin 'two'"):
        add_commands(cli_parser()[1], reg)
    reg = build_registry(extra=[("usurper", command_plugin("usurper", "run"))])
    with pytest.raises(PluginError, match="command 'run' is added twice: by 'cascade' itself and by plugin 'usurper'"):
        add_commands(cli_parser()[1], reg)


def test_command_hook_that_raises_names_the_plugin(no_entry_points):
    mod = types.ModuleType("crash")

    @hookimpl
    def register_commands(subparsers):
        raise ValueError("no parser for you")

    mod.register_commands = register_commands
    reg = build_registry(extra=[("crash", mod)])
    with pytest.raises(PluginError, match="plugin 'crash' raised in register_commands: ValueError: no parser for you"):
        add_commands(cli_parser()[1], reg)


# ---------------------------------------------------------------- the hook reference


def hookspec_signatures():
    """{hook name: "name(arg1, arg2)"} for every function marked with the hookspec marker."""
    pm = pluggy.PluginManager("cascade")
    return {
        name: f"{name}({', '.join(inspect.signature(fn).parameters)})"
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and pm.parse_hookspec_opts(hookspecs, name) is not None
    }


def test_every_hookspec_is_documented_with_its_signature():
    specs = hookspec_signatures()
    assert {"register_drafters", "register_rules", "register_commands"} <= set(specs)
    docs = DOCS.read_text()
    for name, signature in specs.items():
        assert getattr(hookspecs, name).__doc__, f"hook {name} has no docstring"
        assert f"### `{signature}`" in docs, f"docs/plugins.md does not document {signature} (as a ### heading)"
    documented = re.findall(r"^### `(\w+\([^)]*\))`", docs, flags=re.M)
    stale = {sig for sig in documented if sig not in specs.values()}
    assert not stale, f"docs/plugins.md documents hooks that cascade.hookspecs does not define: {sorted(stale)}"


def test_cascade_plugins_naming_no_installed_plugin_warns(monkeypatch, caplog):
    monkeypatch.setenv("CASCADE_PLUGINS", "ngram,ngarm")
    with caplog.at_level(logging.WARNING, logger="cascade.plugins"):
        reg = build_registry()
    assert "ngram" in reg.drafters
    assert any(
        "CASCADE_PLUGINS" in r.message and "'ngarm'" in r.message and "hf-model" in r.message for r in caplog.records
    )


def test_builtin_commands_come_through_the_hook_and_a_plugin_cannot_take_one(monkeypatch):
    import argparse
    import types

    from cascade import commands
    from cascade.plugins import add_commands

    module = types.ModuleType("greedy-cmds")

    @hookimpl
    def register_commands(subparsers):
        subparsers.add_parser("run", help="a second run")

    module.register_commands = register_commands
    reg = build_registry(extra=[("greedy-cmds", module)])
    parser = argparse.ArgumentParser()
    with pytest.raises(
        PluginError, match="command 'run' is added twice: by 'cascade' itself and by plugin 'greedy-cmds'"
    ):
        add_commands(parser.add_subparsers(), reg, builtin=commands)
    parser = argparse.ArgumentParser()
    added = add_commands(parser.add_subparsers(), build_registry(), builtin=commands)
    assert {"run", "plugins", "bench", "sweep", "store-cost", "runs", "db", "zoo"} <= {
        c for c, p in added.items() if p == "cascade"
    }
