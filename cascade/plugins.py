"""The plugin manager: entry-point loading, the name registry, listing.

Plugins come from the `cascade` entry-point group (one distribution per plugin,
as a third party ships them) plus cascade's own built-in rules module, which goes
through the same hooks. Set `CASCADE_PLUGINS=name1,name2` to load only those
entry points (tests use it); `CASCADE_PLUGINS=` (empty) loads none.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from cascade import builtin_rules, hookspecs
from cascade.errors import PluginError

GROUP = "cascade"
ENV_ONLY = "CASCADE_PLUGINS"
BUILTIN = "cascade-builtin"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    name: str  # entry-point name (or "cascade-builtin")
    version: str
    hooks: tuple[str, ...]
    drafters: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()


@dataclass
class Registry:
    drafters: dict[str, type] = field(default_factory=dict)
    rules: dict[str, type] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # plugin -> error, for listing and messages

    def drafter(self, name: str) -> type:
        if name not in self.drafters:
            raise PluginError(f"unknown drafter {name!r}; installed: {_names(self.drafters)}{self._failed_note()}")
        return self.drafters[name]

    def rule(self, name: str) -> type:
        if name not in self.rules:
            raise PluginError(f"unknown rule {name!r}; installed: {_names(self.rules)}{self._failed_note()}")
        return self.rules[name]

    def _failed_note(self) -> str:
        if not self.failed:
            return ""
        return "; plugins that failed to load: " + ", ".join(f"{k} ({v})" for k, v in self.failed.items())


def _names(d: dict) -> str:
    return ", ".join(sorted(d)) or "(none)"


def _entry_points() -> list[md.EntryPoint]:
    eps = sorted(md.entry_points(group=GROUP), key=lambda e: e.name)
    only = os.environ.get(ENV_ONLY)
    if only is not None:
        wanted = {n.strip() for n in only.split(",") if n.strip()}
        eps = [e for e in eps if e.name in wanted]
    return eps


def build_registry(extra: list[tuple[str, ModuleType]] | None = None) -> Registry:
    """Load every plugin and collect what it registers. `extra`: (name, module) pairs to add in-process."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    reg = Registry()
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
        drafters = _collect(module, "register_drafters", reg.drafters, name, "drafter", reg)
        rules = _collect(module, "register_rules", reg.rules, name, "rule", reg)
        reg.plugins.append(PluginInfo(name, version, hooks, drafters, rules))
    return reg


def _collect(module, hook: str, into: dict, plugin: str, kind: str, reg: Registry) -> tuple[str, ...]:
    fn = getattr(module, hook, None)
    if fn is None:
        return ()
    got: list[str] = []

    def register(name: str, cls: type) -> None:
        if name in into:
            owner = next((p.name for p in reg.plugins if name in (p.drafters if kind == "drafter" else p.rules)), "?")
            owner = plugin if name in got else owner
            raise PluginError(f"{kind} {name!r} is registered twice: by plugin {owner!r} and by plugin {plugin!r}")
        into[name] = cls
        got.append(name)

    try:
        fn(register=register)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {plugin!r} raised in {hook}: {type(exc).__name__}: {exc}") from exc
    return tuple(got)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


_cached: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _cached
    if _cached is None:
        _cached = build_registry()
    return _cached


def reset_registry() -> None:
    global _cached
    _cached = None
