"""README's plugin example is real code: it loads through the plugin host and decodes."""

import re
import types
from pathlib import Path

from conftest import policy_dict

from cascade.engine import Engine
from cascade.plugins import build_registry
from cascade.policy import parse_policy

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_plugin() -> types.ModuleType:
    blocks = re.findall(r"```python\n(# my_drafter\.py\n.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "README's plugin guide has one `# my_drafter.py` block"
    module = types.ModuleType("my_drafter")
    exec(compile(blocks[0], "README.md:my_drafter.py", "exec"), module.__dict__)
    return module


def test_readme_plugin_example_decodes_losslessly(family):
    reg = build_registry(extra=[("my-drafter", readme_plugin())])
    assert "repeat" in reg.drafters
    f = family("gpt2")
    spec = parse_policy(policy_dict(target=f["target"], plugin="repeat", drafter_options={"token": 5}))
    gen = Engine.from_policy(spec, registry=reg).generate("def f(x):\n")
    target_only = Engine.from_policy(parse_policy(policy_dict(target=f["target"], mode="target"))).generate("def f(x):\n")
    assert gen.token_ids == target_only.token_ids
    assert gen.metrics.num_draft_tokens > 0
