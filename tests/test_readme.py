"""README's plugin example is real code: the same file ships as plugins/example, installs as a
third party's plugin would, loads through the plugin host and decodes."""

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cascade.decode.engine import Engine
from cascade.plugins import build_registry
from cascade.policy import parse_policy
from cascade.testing import policy_dict

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "plugins" / "example"


def readme_block() -> str:
    blocks = re.findall(r"```python\n(# my_drafter\.py\n.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "README's plugin guide has one `# my_drafter.py` block"
    return blocks[0]


def test_readme_example_is_the_shipped_example_plugin():
    assert readme_block() == (EXAMPLE / "my_drafter.py").read_text(encoding="utf-8")


def test_readme_plugin_example_decodes_losslessly(family, monkeypatch):
    # only the README's code, in-process: an installed copy of plugins/example (pip install -e plugins/example)
    # would register the same drafter name twice
    monkeypatch.setenv("CASCADE_PLUGINS", "")
    module = types.ModuleType("my_drafter")
    exec(compile(readme_block(), "README.md:my_drafter.py", "exec"), module.__dict__)
    reg = build_registry(extra=[("my-drafter", module)])
    assert "repeat" in reg.drafters
    f = family("gpt2")
    spec = parse_policy(policy_dict(target=f["target"], plugin="repeat", drafter_options={"token": 5}))
    gen = Engine.from_policy(spec, registry=reg).generate("def f(x):\n")
    target_only = Engine.from_policy(parse_policy(policy_dict(target=f["target"], mode="target"))).generate(
        "def f(x):\n"
    )
    assert gen.token_ids == target_only.token_ids
    assert gen.metrics.num_draft_tokens > 0


@pytest.mark.slow
@pytest.mark.packaging
def test_example_plugin_installs_as_a_third_party(family, tmp_path):
    """pip-install plugins/example into a folder of its own, then the `cascade` CLI finds and runs it."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert (site / "my_drafter.py").is_file()
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", CASCADE_PLUGINS="my-drafter")

    def cascade(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "cascade.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = json.loads(cascade("plugins", "--json"))["plugins"]
    assert any(p["name"] == "my-drafter" and p["drafters"] == ["repeat"] and p["version"] == "0.2.0" for p in listed)
    f = family("gpt2")
    policy = tmp_path / "repeat.yaml"
    policy.write_text(
        json.dumps(policy_dict(target=f["target"], plugin="repeat", drafter_options={"token": 5}, max_new_tokens=8))
    )
    out = json.loads(cascade("run", str(policy), "--prompt", "def f(x):\n", "--json", "--no-store"))
    assert len(out["token_ids"]) == 8 and out["metrics"]["num_draft_tokens"] > 0


def test_ci_runs_readmes_test_command():
    readme = README.read_text(encoding="utf-8")
    block = re.search(r"Set up and pass the tests.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README names its test command in a ```sh block after 'Set up and pass the tests'"
    command = block.group(1).strip()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert command in ci
