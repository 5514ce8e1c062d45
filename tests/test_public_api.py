"""cascade's public API: what `cascade/__init__.py` exports, what plugins and the dashboard may import, and the
contract tables of docs/plugins.md against the dataclasses they describe."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import cascade
from cascade import drafter
from cascade.schedules.builtin import BUILTIN_SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
# modules outside the root package that plugins, the dashboard and users may import (cascade/__init__.py says so)
PUBLIC = ("cascade.store", "cascade.testing", "cascade.zoo.data", "cascade.bench.defaults", "cascade.bench.completion")
THIRD_PARTIES = [
    *ROOT.glob("plugins/*/cascade_*"),
    ROOT / "dashboard" / "cascade_dashboard",
    ROOT / "plugins" / "example",
]


def test_every_exported_name_resolves_and_is_listed_once():
    assert sorted(cascade.__all__) == sorted(cascade._EXPORTS) and len(set(cascade.__all__)) == len(cascade.__all__)
    for name in cascade.__all__:
        value = getattr(cascade, name)
        assert getattr(sys.modules[cascade._EXPORTS[name]], name) is value, name
    assert "Engine" in dir(cascade)


def test_importing_cascade_loads_nothing_heavy():
    code = "import sys, cascade, cascade.cli; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every cascade module a file imports (`from cascade.zoo import data` imports
    cascade.zoo.data; `from cascade import Engine` imports cascade)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "cascade"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "cascade":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*sub.split("."))
                ).is_dir()
                out.append((node.lineno, sub if is_module else node.module))
    return out


def test_plugins_and_the_dashboard_import_only_the_public_api():
    wrong = []
    for folder in THIRD_PARTIES:
        for path in folder.rglob("*.py"):
            if "build" in path.relative_to(folder).parts:
                continue
            for line, module in imported_modules(path):
                public = module == "cascade" or any(module == p or module.startswith(p + ".") for p in PUBLIC)
                if not public:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "import these through `cascade` (or a public module):\n" + "\n".join(wrong)


def test_the_import_check_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from cascade.decode.engine import Engine\nfrom cascade.zoo import data\nfrom cascade import Engine\n"
    )
    assert imported_modules(bad) == [(1, "cascade.decode.engine"), (2, "cascade.zoo.data"), (3, "cascade")]


def probes(tree: ast.AST) -> list[int]:
    """Lines calling getattr/hasattr outside the load-time contract checks (`check_*` functions)."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            found.append(node.lineno)
        found += probes(node)
    return found


def test_the_decoding_core_probes_no_capability():
    """Capabilities are declared on the protocols (DrafterBase, ScheduleBase): the engine's path reads them as
    attributes, never with getattr/hasattr (only the checks that refuse a plugin's class at load time do)."""
    assert probes(ast.parse("def check_x(c):\n    hasattr(c, 'a')\ndef f(c):\n    getattr(c, 'b')\n")) == [4]
    core = [*(ROOT / "cascade" / "decode").glob("*.py")]
    core += [
        ROOT / "cascade" / f for f in ("schedules/base.py", "schedules/builtin.py", "model_drafter.py", "drafter.py")
    ]
    for path in core:
        found = probes(ast.parse(path.read_text(encoding="utf-8")))
        assert not found, f"{path.relative_to(ROOT)} probes with getattr/hasattr at lines {found}"


def documented_fields(doc: str, name: str) -> list[str]:
    """The first column of the table that follows the line "`name` (frozen..."."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"`{name}` (frozen"))
    fields, seen_table = [], False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            seen_table = True
            m = re.match(r"\| `(\w+)`", line)
            if m:
                fields.append(m.group(1))
        elif seen_table:
            break
    return fields


def test_the_contract_tables_list_exactly_the_dataclass_fields():
    doc = DOCS.read_text(encoding="utf-8")
    for cls in (drafter.DraftRound, drafter.DraftStep, drafter.TreeDraft, drafter.Feedback, drafter.DrafterContext):
        table = documented_fields(doc, cls.__name__)
        fields = [f.name for f in dataclasses.fields(cls)]
        # a row may document two fields at once (`device`, `dtype`)
        listed = set(table) | {
            m for row in doc.splitlines() if row.startswith("| `") for m in re.findall(r"`(\w+)`", row.split("|")[1])
        }
        assert set(table) <= set(fields), (
            f"docs/plugins.md documents {cls.__name__} fields it lacks: {set(table) - set(fields)}"
        )
        assert set(fields) <= listed, f"docs/plugins.md's {cls.__name__} table lacks {set(fields) - listed}"
    tree_round = next(p for p in doc.split("\n\n") if p.startswith("`TreeRound` (frozen)"))
    assert all(f"`{f.name}" in tree_round for f in dataclasses.fields(drafter.TreeRound))


def test_the_declared_capabilities_and_builtin_schedules_are_documented():
    doc = DOCS.read_text(encoding="utf-8")
    for name in drafter.DECLARED:
        assert re.search(rf"^\| `{name}` \|", doc, re.M), f"docs/plugins.md does not document the capability {name}"
    hook = doc[doc.index("### `register_schedules(register)`") : doc.index("### `register_predictors(register)`")]
    missing = [name for name in BUILTIN_SCHEDULES if f"`{name}`" not in hook]
    assert not missing, f"docs/plugins.md's register_schedules does not name the built-in schedules {missing}"
