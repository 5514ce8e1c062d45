"""The plugin manager: entry-point loading, the name registry, commands, listing.

Plugins come from the `cascade` entry-point group (one distribution per plugin,
as a third party ships them) plus cascade's own built-in plugin (its rules and block
schedules), which goes through the same hooks. Set `CASCADE_PLUGINS=name1,name2` to load only those
entry points (tests use it); `CASCADE_PLUGINS=` (empty) loads none. Set
`CASCADE_TRACE_PLUGINS=1` to log every hook call on the `cascade.plugins` logger.

Every hook is called through pluggy, one plugin at a time (`_call`), so a hookimpl
declared with `specname=` counts, pluggy's hook-call monitoring sees each call, and
whatever a hook registers is credited to the plugin that registered it. The hooks
and their contracts are in `cascade.hookspecs`; `docs/plugins.md` is the reference.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from cascade import builtin as builtin_rules
from cascade import hookspecs
from cascade.drafter import Drafter, check_drafter_class
from cascade.errors import PluginError
from cascade.rules import Rule, check_rule_class
from cascade.schedules.base import AcceptancePredictor, Schedule, check_predictor_class, check_schedule_class

GROUP = "cascade"
ENV_ONLY = "CASCADE_PLUGINS"
ENV_TRACE = "CASCADE_TRACE_PLUGINS"
BUILTIN = "cascade-builtin"
HOST = "cascade"  # who owns the subcommands the command line adds itself, in messages
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    name: str  # entry-point name (or "cascade-builtin")
    version: str
    hooks: tuple[str, ...]
    drafters: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    schedules: tuple[str, ...] = ()
    predictors: tuple[str, ...] = ()


@dataclass
class Registry:
    drafters: dict[str, type[Drafter]] = field(default_factory=dict)
    rules: dict[str, type[Rule]] = field(default_factory=dict)
    schedules: dict[str, type[Schedule]] = field(default_factory=dict)
    predictors: dict[str, type[AcceptancePredictor]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # plugin -> error, for listing and messages
    pm: pluggy.PluginManager | None = field(default=None, repr=False)  # for hooks called after loading

    def drafter(self, name: str) -> type[Drafter]:
        if name not in self.drafters:
            raise PluginError(f"unknown drafter {name!r}; installed: {_names(self.drafters)}{self._failed_note()}")
        return self.drafters[name]

    def rule(self, name: str) -> type[Rule]:
        if name not in self.rules:
            raise PluginError(f"unknown rule {name!r}; installed: {_names(self.rules)}{self._failed_note()}")
        return self.rules[name]

    def schedule(self, name: str) -> type[Schedule]:
        if name not in self.schedules:
            raise PluginError(f"unknown schedule {name!r}; installed: {_names(self.schedules)}{self._failed_note()}")
        return self.schedules[name]

    def predictor(self, name: str) -> type[AcceptancePredictor]:
        if name not in self.predictors:
            raise PluginError(
                f"unknown acceptance predictor {name!r}; installed: {_names(self.predictors)}{self._failed_note()}"
            )
        return self.predictors[name]

    def _failed_note(self) -> str:
        if not self.failed:
            return ""
        return "; plugins that failed to load: " + ", ".join(f"{k} ({v})" for k, v in self.failed.items())


def _names(d: Mapping[str, Any]) -> str:
    return ", ".join(sorted(d)) or "(none)"


def _entry_points() -> list[md.EntryPoint]:
    eps = sorted(md.entry_points(group=GROUP), key=lambda e: e.name)
    only = os.environ.get(ENV_ONLY)
    if only is not None:
        wanted = {n.strip() for n in only.split(",") if n.strip()}
        unknown = sorted(wanted - {e.name for e in eps} - {BUILTIN})
        if unknown:
            log.warning(
                "%s names no installed plugin called %s; installed: %s",
                ENV_ONLY,
                ", ".join(map(repr, unknown)),
                ", ".join(e.name for e in eps) or "(none)",
            )
        eps = [e for e in eps if e.name in wanted]
    return eps


def build_registry(extra: list[tuple[str, ModuleType]] | None = None) -> Registry:
    """Load every plugin and collect what it registers. `extra`: (name, module) pairs to add in-process."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(ENV_TRACE, "") not in ("", "0"):
        _trace(pm)
    reg = Registry(pm=pm)
    modules: list[tuple[str, ModuleType, str]] = [(BUILTIN, builtin_rules, _version("cascade-llm"))]
    for ep in _entry_points():
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            log.warning("plugin %s failed to load: %s", ep.name, exc)
            reg.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        modules.append((ep.name, module, ep.dist.version if ep.dist else "unknown"))
    for name, module in extra or []:
        modules.append((name, module, getattr(module, "__version__", "in-process")))

    for name, module, version in modules:
        try:
            pm.register(module, name=name)
        except Exception as exc:  # pluggy validation: a hook with a wrong signature, a name registered twice
            raise PluginError(f"plugin {name!r} cannot be registered: {type(exc).__name__}: {exc}") from exc
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(module) or []))
        _refuse_unknown_hooks(pm, name, module)
        drafters = _collect(pm, reg, name, "register_drafters", "drafter", reg.drafters, check_drafter_class)
        rules = _collect(pm, reg, name, "register_rules", "rule", reg.rules, check_rule_class)
        schedules = _collect(pm, reg, name, "register_schedules", "schedule", reg.schedules, check_schedule_class)
        predictors = _collect(pm, reg, name, "register_predictors", "predictor", reg.predictors, check_predictor_class)
        reg.plugins.append(PluginInfo(name, version, hooks, drafters, rules, schedules, predictors))
    return reg


def _refuse_unknown_hooks(pm: pluggy.PluginManager, plugin: str, module: object) -> None:
    """A hookimpl with no matching spec is a typo (or a hook of a newer cascade): say so at load."""
    for caller in pm.get_hookcallers(module) or []:
        if caller.spec is None and any(i.plugin is module and not i.optionalhook for i in caller.get_hookimpls()):
            known = ", ".join(sorted(n for n, c in vars(pm.hook).items() if getattr(c, "spec", None) is not None))
            raise PluginError(
                f"plugin {plugin!r} implements {caller.name!r}, which is not a cascade hook (known: {known}); "
                "fix the name, or mark a hook of a newer cascade with @hookimpl(optionalhook=True)"
            )


def _call(pm: pluggy.PluginManager, hook: str, plugin: str, **kwargs: Any) -> bool:
    """Call `hook` on `plugin` alone, through pluggy; False when the plugin does not implement it.

    Anything the plugin raises, other than a `PluginError` (a refusal from the host's
    own callbacks), becomes a `PluginError` naming the plugin and the hook.
    """
    if not any(impl.plugin_name == plugin for impl in getattr(pm.hook, hook).get_hookimpls()):
        return False
    others = [p for name, p in pm.list_name_plugin() if name != plugin]
    try:
        pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {plugin!r} raised in {hook}: {type(exc).__name__}: {exc}") from exc
    return True


def _collect(
    pm: pluggy.PluginManager,
    reg: Registry,
    plugin: str,
    hook: str,
    kind: str,
    into: dict[str, Any],
    check: Callable[[str, type], None],
) -> tuple[str, ...]:
    """Call `plugin`'s `hook` with a `register(name, cls)` that checks `cls` against the contract."""
    got: list[str] = []

    def register(name: str, cls: type) -> None:
        if name in into:
            owner = plugin if name in got else _owner(reg, kind, name)
            raise PluginError(f"{kind} {name!r} is registered twice: by plugin {owner!r} and by plugin {plugin!r}")
        if not isinstance(cls, type):
            raise PluginError(
                f"plugin {plugin!r} registers {kind} {name!r} as {cls!r}: register(name, cls) takes a class"
            )
        try:
            check(name, cls)
        except PluginError as exc:  # the check names the class and what changed; add who registered it
            raise PluginError(f"plugin {plugin!r}: {exc}") from None
        into[name] = cls
        got.append(name)

    _call(pm, hook, plugin, register=register)
    return tuple(got)


def _owner(reg: Registry, kind: str, name: str) -> str:
    return next((p.name for p in reg.plugins if name in getattr(p, kind + "s")), "?")


def add_commands(
    subparsers: argparse._SubParsersAction, registry: Registry | None = None, builtin: ModuleType | None = None
) -> dict[str, str]:
    """Let every loaded plugin add its `cascade` subcommands (`register_commands`).

    `subparsers` is what `parser.add_subparsers()` returned; commands already in it
    belong to the command line itself. `builtin`, the command line's own commands
    module, is registered as plugin "cascade" and asked first. A name (or alias) added
    twice is a `PluginError` naming both owners. Returns {command: plugin} for the added ones.
    """
    reg = registry if registry is not None else _shared_registry()
    added: dict[str, str] = {}
    if reg.pm is None:  # a Registry built by hand: no plugins to ask
        return added
    if builtin is not None:
        if reg.pm.get_plugin(HOST) is None:
            reg.pm.register(builtin, name=HOST)
        _call_commands(reg.pm, HOST, subparsers, added)
    for info in reg.plugins:
        if "register_commands" in info.hooks:
            _call_commands(reg.pm, info.name, subparsers, added)
    return added


def _call_commands(
    pm: pluggy.PluginManager, plugin: str, subparsers: argparse._SubParsersAction, added: dict[str, str]
) -> None:
    original = subparsers.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        names = (name, *kwargs.get("aliases", ()))
        for n in names:
            if n in subparsers.choices:
                who = f"{HOST!r} itself" if added.get(n, HOST) == HOST else f"plugin {added[n]!r}"
                raise PluginError(f"command {n!r} is added twice: by {who} and by plugin {plugin!r}")
        parser = original(name, **kwargs)
        added.update(dict.fromkeys(names, plugin))
        return parser

    # argparse raises on a conflicting name only since 3.11, with no owner; check first, on this call only
    setattr(subparsers, "add_parser", add_parser)  # noqa: B010 (mypy refuses assigning to a method)
    try:
        _call(pm, "register_commands", plugin, subparsers=subparsers)
    finally:
        delattr(subparsers, "add_parser")


def _trace(pm: pluggy.PluginManager) -> None:
    """Log each hook call (INFO) and its outcome (DEBUG; INFO when it raised) on `cascade.plugins`."""
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    if not log.hasHandlers():  # the user asked to see it: print even when nothing configured logging
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)
    started: list[float] = []

    def before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        started.append(time.perf_counter())
        log.info("hook %s(%s) -> %s", hook, ", ".join(kwargs), _impls(impls))

    def after(
        outcome: pluggy.Result[object], hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]
    ) -> None:
        ms = (time.perf_counter() - started.pop()) * 1e3 if started else float("nan")
        if outcome.exception is None:
            log.debug("hook %s done in %.1f ms -> %s", hook, ms, _impls(impls))
        else:
            exc = outcome.exception
            log.info("hook %s raised in %.1f ms -> %s: %s: %s", hook, ms, _impls(impls), type(exc).__name__, exc)

    pm.add_hookcall_monitoring(before, after)


def _impls(impls: Sequence[pluggy.HookImpl]) -> str:
    return ", ".join(f"{i.plugin_name} ({getattr(i.function, '__qualname__', i.function)})" for i in impls) or "(none)"


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


_cached: Registry | None = None


def _shared_registry() -> Registry:
    global _cached
    if _cached is None:
        _cached = build_registry()
    return _cached


def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return _shared_registry()


def reset_registry() -> None:
    global _cached
    _cached = None
