"""Helpers shared by the plugin's tests (a module name of its own: tests/conftest.py is also `conftest`)."""

from __future__ import annotations

from pathlib import Path

from cascade.testing import CORPUS, policy_dict, write_policy

PROMPTS = [CORPUS[i : i + 40 + (i % 23)] for i in range(0, 1400, 61)][:16]  # 16 distinct snippets


def make_policy(path: Path, fam, **kw) -> Path:
    opts = kw.pop("rule_options", None)
    d = policy_dict(fam["target"], fam["near"], **kw)
    if opts is not None:
        d["rule"]["options"] = opts
    return write_policy(path, **d)


def log_runs(store, policy_path: Path, prompts: list[str], max_new_tokens: int = 24) -> int:
    """Decode `prompts` with the policy, logged as one run; its id."""
    from cascade.decode.engine import Engine
    from cascade.store import engine_info

    engine = Engine.from_policy(policy_path)
    with store.start_run(engine.policy, engine_info(engine)) as run:
        for p in prompts:
            seq = run.start_sequence(p)
            gen = engine.generate(p, max_new_tokens=max_new_tokens, on_step=run.step_logger(seq))
            run.end_sequence(seq, gen)
    return run.run_id
