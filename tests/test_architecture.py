"""The shape of the house: no import cycle inside `cascade/`, no oversized module, the CLI at the top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "cascade"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "migrations" not in p.parts}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every cascade module `path` imports, lazy and TYPE_CHECKING imports included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from cascade import sampling` imports the module cascade.verify.sampling
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # cascade.store.models.Run -> cascade.store.models
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {name: imports(path, known) for name, path in mods.items()}
    # a package's __init__ is imported with any of its submodules, but that is not an arrow we draw
    return {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in g.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    g = graph()
    assert "cascade.decode.engine" in g["cascade.commands"]  # imported inside the command functions
    assert "cascade.verify.sampling" in g["cascade.decode.engine"]  # `from cascade import models, profile, sampling`


def reaches(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in g.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_lower_floors_do_not_stand_on_upper_ones():
    """The KV cache stands on no deferral rule, a schedule on no profiler or model runtime, the decoding math on
    no engine: each is usable (and testable) without what sits above it (loading a model, `runtime.models` with the
    GGUF reader it calls, is the one piece of the runtime the drafter contract names: `DrafterContext.load_model`)."""
    g = graph()
    decode = {n for n in g if n.startswith("cascade.decode")}
    loading = {"cascade.runtime", "cascade.runtime.models", "cascade.runtime.gguf"}
    runtime = {n for n in g if n.startswith("cascade.runtime")} - loading
    verify = {"cascade.verify.chain", "cascade.verify.tree", "cascade.rules"}
    assert not reaches(g, "cascade.runtime.ragged") & (verify | decode)
    for schedule in ("cascade.schedules.base", "cascade.schedules.builtin"):
        assert not reaches(g, schedule) & ({"cascade.schedules.profile"} | runtime | decode)
    assert not reaches(g, "cascade.decode.drafting") & ({"cascade.decode.engine", "cascade.decode.steps"} | runtime)
    for math in ("cascade.verify.sampling", "cascade.verify.chain", "cascade.verify.tree", "cascade.rules"):
        assert not reaches(g, math) & (decode | runtime | {"cascade.drafter", "cascade.schedules.builtin"})
    assert reaches({"a": {"b"}, "b": {"c"}}, "a") == {"b", "c"}
