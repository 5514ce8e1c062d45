"""A store filled by real engine runs on tiny models (cascade.testing), built once per session.

Runs (gpt2 family, greedy, 3 prompts, 24 new tokens): target-only, lossless speculative (rule none),
speculative chow α = 0.3, speculative token_v3 α = 0.3, and the n-gram drafter with token_v3;
every sequence gets its quality (`Store.set_quality`), as `cascade bench` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from cascade.testing import build_family, isolate, make_tokenizer, policy_dict

PROMPTS = [
    {"prompt": "def add(a, b):\n", "reference": "    return a + b\n"},
    {"prompt": "class Point:\n    def __init__(self, x, y):\n", "reference": "        self.x = x\n"},
    {"prompt": "for i in range(10):\n", "reference": "    print(i, add(i, i))\n"},
]
RUNS = [  # (name, mode, rule, alpha, drafter plugin)
    ("target-only", "target", "none", 0.0, "hf-model"),
    ("lossless", "speculative", "none", 0.0, "hf-model"),
    ("chow-0.3", "speculative", "chow", 0.3, "hf-model"),
    ("token-v3-0.3", "speculative", "token_v3", 0.3, "hf-model"),
    ("ngram-token-v3", "speculative", "token_v3", 0.2, "ngram"),
]


@dataclass(frozen=True)
class FilledStore:
    url: str
    path: Path
    run_ids: dict[str, int]  # name -> run id


def fill(url: str, family: dict[str, Path]) -> dict[str, int]:
    import torch

    from cascade.bench.completion import score
    from cascade.bench.quality import chrf
    from cascade.decode.engine import Engine
    from cascade.metrics import Quality
    from cascade.policy import parse_policy
    from cascade.store import Store, engine_info

    torch.set_num_threads(1)
    ids = {}
    with Store.open(url) as store:
        for name, mode, rule, alpha, plugin in RUNS:
            d = policy_dict(family["target"], family["near"], mode=mode, rule=rule, alpha=alpha, plugin=plugin)
            d["name"] = name
            policy = parse_policy(d)
            engine = Engine.from_policy(policy)
            with store.start_run(policy, engine_info(engine)) as run:
                for row in PROMPTS:
                    seq = run.start_sequence(row["prompt"], reference=row["reference"], seed=0)
                    gen = engine.generate(row["prompt"], on_step=run.step_logger(seq))
                    run.end_sequence(seq, gen)
                    q = score(row["prompt"], gen.text, row["reference"])
                    q = Quality(**{**q.as_dict(), "chrf": chrf(gen.text, row["reference"])})
                    store.set_quality(seq, q, reference=row["reference"])
            ids[name] = run.run_id
    return ids


@pytest.fixture(scope="session")
def filled_store(tmp_path_factory) -> FilledStore:
    root = tmp_path_factory.mktemp("dash")
    tok = root / "tokenizer"
    make_tokenizer(tok)
    family = build_family(root, "gpt2", tok)
    path = root / "runs.db"
    url = f"sqlite:///{path}"
    return FilledStore(url, path, fill(url, family))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.mktemp("cascade-home"))


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where a test leaves files for people to look at: $CASCADE_TEST_ARTIFACTS, else the test's tmp dir."""
    root = os.environ.get("CASCADE_TEST_ARTIFACTS")
    out = Path(root) if root else tmp_path / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out
