"""`cascade calibrate`: the share's definition, the rules' critical α, the search on tiny models, the outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cascade.builtin import BUILTIN_RULES
from cascade.calibrate import cli as calibrate_cli
from cascade.calibrate.replay import Replayer
from cascade.calibrate.scores import AlphaMap, kept_and_emitted, target_share
from cascade.calibrate.search import DEFAULT_MAX_REPLAYS, DEFAULT_TOLERANCE, calibrate
from cascade.cli import main
from cascade.errors import CascadeError
from cascade.features import decision_features
from cascade.metrics import Decision, StepRecord
from cascade.policy import load_policy
from cascade.store import Store
from cascade.store.queries import list_calibrations, list_runs
from cascade.testing import CORPUS, policy_dict, write_policy

PROMPTS = [{"prompt": CORPUS[i : i + 50], "reference": CORPUS[i + 50 : i + 90]} for i in range(0, 700, 97)][:6]


def step(kept_deferred_accepted: list[tuple[bool, bool]], emitted: int) -> StepRecord:
    rows = tuple(
        Decision(position=i, kind="draft", drafted_token=1, emitted_token=1 if acc else None, accepted=acc, deferred=d)
        for i, (d, acc) in enumerate(kept_deferred_accepted)
    )
    return StepRecord(
        index=0,
        block_size=3,
        drafted=len(rows),
        accepted=0,
        emitted=(1,) * emitted,
        deferred=0,
        target_calls=1,
        drafter_calls=1,
        draft_seconds=0,
        verify_seconds=0,
        decisions=rows,
    )


def test_share_counts_kept_drafts_only():
    # a block: draft kept by the rule (r=0) and emitted; a deferred draft the target accepted; a rejected one;
    # a correction
    s = step([(False, True), (True, True), (True, False)], emitted=3)
    assert kept_and_emitted([s]) == (1, 3)
    assert target_share(1, 3) == pytest.approx(2 / 3)
    assert math.isnan(target_share(0, 0))


@pytest.mark.parametrize("name", sorted(n for n in BUILTIN_RULES if n != "none"))
def test_critical_alpha_matches_each_rule(name):
    """Each rule's closed form says exactly when it defers the drafted token: r(x) = 1 iff α < critical α."""
    g = torch.Generator().manual_seed(0)
    k, vocab = 64, 12
    q = torch.softmax(3 * torch.randn(k, vocab, generator=g), -1)
    p = torch.softmax(3 * torch.randn(k, vocab, generator=g), -1)
    x = torch.multinomial(q, 1, generator=g).squeeze(-1)
    f = decision_features(x, q, p)
    from cascade.features import FEATURES

    cols = {n: f[:, i].double().numpy() for i, n in enumerate(FEATURES)} | {"position": np.zeros(k)}
    crit = BUILTIN_RULES[name]().critical_alpha(cols)
    for alpha in np.quantile(crit[np.isfinite(crit)], [0.1, 0.3, 0.5, 0.7, 0.9]) + 1e-4:
        rule = BUILTIN_RULES[name](float(alpha))
        r = rule.defer(q, p)
        r_x = (r.expand(k, -1).gather(-1, x.unsqueeze(-1)) if r.shape[-1] > 1 else r).squeeze(-1).numpy()
        clear = np.abs(crit - alpha) > 1e-5
        assert ((r_x == 1) == (alpha < crit))[clear].all()
    assert BUILTIN_RULES["none"]().critical_alpha(cols).tolist() == [math.inf] * k  # defers every position


def test_alpha_map_inverts_and_makes_infinite_ends_finite():
    scores = np.linspace(-3.0, 7.0, 101)
    m = AlphaMap(-math.inf, math.inf, scores)
    assert m.spec_end < -3.0 and 7.0 < m.drafter_end and math.isfinite(m.spec_end + m.drafter_end)
    for u in (0.1, 0.5, 0.9):
        assert m.u_of(m.alpha(u)) == pytest.approx(u, abs=0.02)
    assert m.u_of(m.alpha(1.0)) == 1.0 and m.u_of(m.alpha(0.0)) == 0.0
    plain = AlphaMap(0.0, 1.0, None)
    assert plain.alpha(0.25) == pytest.approx(0.75)


def test_command_defaults_agree():
    assert (calibrate_cli.DEFAULT_TOLERANCE, calibrate_cli.DEFAULT_MAX_REPLAYS) == (
        DEFAULT_TOLERANCE,
        DEFAULT_MAX_REPLAYS,
    )


@pytest.fixture
def chow_policy(family, tmp_path):
    f = family("llama")
    (tmp_path / "pol").mkdir()
    return write_policy(
        tmp_path / "pol" / "chow.yaml",
        **policy_dict(f["target"], f["near"], rule="chow", alpha=0.0, max_new_tokens=16, block_size=3),
    )


def test_share_falls_as_alpha_moves_to_the_drafter_end(chow_policy, tmp_path):
    policy = load_policy(chow_policy)
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        r = Replayer(PROMPTS, store)
        shares = [r.replay(policy.derive("p", {"rule": {"alpha": a}}, drop=()), a).share for a in (0.0, 0.5, 0.8, 1.0)]
        assert len(list_runs(store)) == 4  # every replay is a run
    assert shares[0] == 1.0 and shares[-1] < 0.5
    assert all(a >= b for a, b in zip(shares, shares[1:]))


def test_calibrate_reaches_the_share_and_writes_a_policy_that_loads(chow_policy, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "chow-cal.yaml"  # another folder: relative model paths are re-expressed
    url = f"sqlite:///{tmp_path / 'c.db'}"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    code = main(
        [
            "calibrate",
            str(chow_policy),
            "--prompts",
            str(prompts),
            "--target-share",
            "0.6",
            "--tolerance",
            "0.08",
            "--store",
            url,
            "--out",
            str(out),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["converged"]
    assert abs(result["measured"] - 0.6) <= 0.08 and 1 <= result["replays"] <= DEFAULT_MAX_REPLAYS
    written = load_policy(out)
    assert written.rule.alpha == pytest.approx(result["alpha"]) and "calibrated" in (written.description or "")
    from cascade.decode.engine import Engine

    Engine.from_policy(written)  # its models resolve from the new folder
    with Store.open(url) as store:
        (rec,) = list_calibrations(store)
        runs = list_runs(store, limit=50)
    assert rec["objective"] == "target_share" and rec["goal"] == 0.6 and rec["converged"]
    assert rec["alpha"] == pytest.approx(result["alpha"]) and len(rec["run_ids"]) == result["replays"] == len(runs)
    assert rec["prompts_sha256"] and rec["num_prompts"] == len(PROMPTS)


def test_quality_floor(chow_policy, tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'q.db'}") as store:
        res = calibrate(
            load_policy(chow_policy),
            PROMPTS,
            store,
            quality_floor=0.9,
            tolerance=0.1,
            max_replays=4,
            say=lambda m: None,
        )
        assert res.baseline is not None and res.baseline.quality is not None
        assert 0.0 <= res.alpha <= 1.0 and len(res.replays) <= 4
        if res.measured is not None:
            assert res.measured >= 0.9
        with pytest.raises(CascadeError, match="reference"):
            calibrate(
                load_policy(chow_policy),
                [{"prompt": p["prompt"]} for p in PROMPTS],
                store,
                quality_floor=0.9,
                say=lambda m: None,
            )


def test_clear_errors(family, chow_policy, tmp_path):
    f = family("llama")
    target_only = write_policy(tmp_path / "t.yaml", **policy_dict(f["target"], mode="target"))
    with Store.open(f"sqlite:///{tmp_path / 'e.db'}") as store:
        with pytest.raises(CascadeError, match="nothing to calibrate"):
            calibrate(load_policy(target_only), PROMPTS, store, target_share=0.5, say=lambda m: None)
        with pytest.raises(CascadeError, match="exactly one"):
            calibrate(load_policy(chow_policy), PROMPTS, store, say=lambda m: None)
        with pytest.raises(CascadeError, match="target-share must be in"):
            calibrate(load_policy(chow_policy), PROMPTS, store, target_share=1.5, say=lambda m: None)


def test_a_replay_failing_the_parse_guard_says_so_instead_of_quality_minus_infinity():
    from cascade.calibrate.replay import Replay
    from cascade.calibrate.search import _judged

    base = Replay(None, 1.0, 10, 10, 0.8, 0.9, 1, 1.0)
    bad = Replay(0.5, 0.2, 10, 10, 0.7, 0.3, 2, 1.0)
    assert _judged(bad, -math.inf, base) == "fails the parse-rate guard (parse rate 0.300 against target-only's 0.900)"
    assert _judged(bad, 0.875, base) == "quality 0.875 of target-only"
