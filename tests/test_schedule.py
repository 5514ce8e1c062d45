"""Block schedules: the four built-ins behind one protocol, the adaptive stopping rule, and exactness."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from cascade.decode.engine import Engine
from cascade.drafter import DrafterBase, DraftStep
from cascade.errors import PluginError
from cascade.policy import PolicyError, parse_policy
from cascade.schedules import profile
from cascade.schedules.base import DraftPlan, Schedule, ScheduleSettings
from cascade.schedules.builtin import (
    BUILTIN_SCHEDULES,
    Adaptive,
    AdaptiveOptions,
    GrowShrinkOptions,
    Heuristic,
    SurvivalStop,
)
from cascade.schedules.costs import CostTable, calibrate
from cascade.testing import Driver, policy_dict
from cascade.verify import sampling as S

PROMPT = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self"
# one drafter step costs 0.02 of a target step; a call over n tokens 1 + 0.05·(n − 1): drafting one more
# token pays only when its survival is high enough (for the first: c > 0.07; tiny test drafters are unsure)
TABLE = CostTable(0.02, tuple(1.0 + 0.05 * i for i in range(9)))


def engine(**kw) -> Engine:
    return Engine.from_policy(parse_policy(policy_dict(**kw)))


class Scripted(DrafterBase):
    """Drafts every row of a batch from a script of confidences: token i of row b has confidence rows[b][i]."""

    name, deterministic, batched = "scripted", True, True

    def __init__(self, rows: list[list[float]]):
        self.script = rows

    def step(self, ask):
        script = [self.script[b] for b in ask.rows]
        return DraftStep(
            tokens=torch.tensor([ask.drafted if ask.drafted < len(s) else -1 for s in script]),
            confidence=torch.tensor([s[ask.drafted] if ask.drafted < len(s) else 0.0 for s in script]),
        )


def cut_batch(rows: list[list[float]], stop) -> list[int]:
    """How many drafts of each row the engine draws under one shared stop rule (cascade.decode.drafting)."""
    driver = Driver(Scripted(rows))
    prompts = [torch.tensor([1, 2])] * len(rows)
    driver.start(prompts)
    ks = [len(r) for r in rows]
    return [d.tokens.shape[0] for d in driver.draft(prompts, ks, [DraftPlan(k, stop) for k in ks])]


def cut(confidences: list[float], stop) -> int:
    """How many drafts of one row the engine draws under a stop rule."""
    return cut_batch([confidences], stop)[0]


def test_the_builtins_follow_the_protocol():
    assert set(BUILTIN_SCHEDULES) == {"constant", "heuristic", "bass", "confidence", "adaptive"}
    for cls in BUILTIN_SCHEDULES.values():
        settings = ScheduleSettings(cls.Options(), costs=TABLE)
        assert isinstance(cls(settings), Schedule)
        assert cls.max_draft(cls.Options()) in (4, 16)  # its declared options' defaults


def test_heuristic_grows_and_shrinks_within_bounds():
    h = Heuristic(ScheduleSettings(GrowShrinkOptions(block_size=4, min_block_size=2, max_block_size=7)))
    ks = []
    for drafted, accepted in [(4, 4), (6, 6), (7, 3), (6, 0), (5, 0), (2, 0)]:
        ks.append(h.plan(100).k)
        h.update(drafted, accepted)
    assert ks == [4, 6, 7, 6, 5, 4] and h.plan(100).k == 3 and h.plan(1).k == 1


def test_survival_stop_is_the_argmax_of_expected_tokens_per_cost():
    """For decreasing confidences (E/C unimodal) the first drop is SPEC's k* = argmax E(k)/C(k)."""
    stop = SurvivalStop(TABLE.draft_seconds, TABLE.verify_seconds)
    for confs in ([0.9, 0.8, 0.7, 0.5, 0.2, 0.1], [0.3, 0.2], [0.95] * 8, [0.99, 0.6, 0.4]):
        expected = [1.0 + sum(math.prod(confs[:i]) for i in range(1, k + 1)) for k in range(len(confs) + 1)]
        ratio = [e / stop.cost(k) for k, e in enumerate(expected)]
        assert cut(confs, stop) == max(range(len(ratio)), key=ratio.__getitem__)
    assert cut([0.06], stop) == 0 and cut([0.08], stop) == 1  # the first draft pays from c = 0.07 up
    assert stop.cost(2) == pytest.approx(0.04 + 1.1)
    assert SurvivalStop(0.02, TABLE.verify_seconds, lookahead=True).cost(0) == pytest.approx(1.02)
    assert SurvivalStop(0.02, TABLE.verify_seconds, step_seconds=0.5).cost(1) == pytest.approx(0.02 + 1.05 + 0.5)


def test_the_stop_rule_reads_only_the_confidences_so_far():
    """cut() stops at the first j where stop(c_1..c_j) says so: later confidences change nothing."""
    stop = SurvivalStop(TABLE.draft_seconds, TABLE.verify_seconds)
    head = [0.9, 0.03]
    assert {cut(head + tail, stop) for tail in ([], [0.99, 0.99], [0.1])} == {cut(head, stop)}


def test_temperature_calibration():
    assert calibrate(0.8, 1.0) == 0.8 and calibrate(1.0, 3.0) == 1.0 and calibrate(0.0, 0.5) == 0.0
    assert calibrate(0.8, 2.0) == pytest.approx(1 / (1 + math.exp(-math.log(4) / 2)))
    stop = SurvivalStop(0.02, TABLE.verify_seconds, temperatures=(4.0,))
    assert stop.calibrated(1, 0.9) < 0.9 and stop.calibrated(2, 0.9) == 0.9  # softened at position 1 only


def test_adaptive_needs_a_cost_table():
    with pytest.raises(PluginError, match="cost table"):
        Adaptive(ScheduleSettings(AdaptiveOptions()))
    plan = Adaptive(ScheduleSettings(AdaptiveOptions(max_block_size=5), costs=TABLE)).plan(3)
    assert plan.k == 3 and plan.stop is not None


@pytest.fixture
def fixed_costs(monkeypatch):
    """Adaptive schedules get TABLE instead of a measured table (exactness does not depend on costs)."""
    monkeypatch.setattr(profile, "cost_table", lambda engine, max_k, remeasure=False: (TABLE, None, False))


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_adaptive_is_lossless_greedy_for_both_drafters(family, arch, fixed_costs):
    f = family(arch)
    ref = engine(target=f["target"], mode="target", max_new_tokens=32).generate(PROMPT).token_ids
    for kw in (dict(drafter=f["near"]), dict(plugin="ngram")):
        g = engine(target=f["target"], schedule="adaptive", max_block_size=8, max_new_tokens=32, **kw).generate(PROMPT)
        assert g.token_ids == ref
        assert len({s.drafted for s in g.steps[:-1]}) > 1  # the rule chose different block sizes


def test_adaptive_cascade_ends_hold(family, fixed_costs):
    """token_v3 with the adaptive schedule: α = 0 is target-only, α = 1 the drafter alone."""
    f = family("gpt2")
    kw = dict(target=f["target"], drafter=f["near"], max_new_tokens=24)
    ada = dict(kw, schedule="adaptive", rule="token_v3")
    assert engine(**ada, alpha=0.0).generate(PROMPT).token_ids == engine(**kw, mode="target").generate(PROMPT).token_ids
    assert (
        engine(**ada, alpha=1.0).generate(PROMPT).token_ids == engine(**kw, mode="drafter").generate(PROMPT).token_ids
    )


@pytest.mark.slow
@pytest.mark.parametrize("rule,alpha", [("none", 0.0), ("token_v3", 0.4)])
def test_adaptive_sampling_matches_pi_over_two_tokens(family, fixed_costs, rule, alpha):
    """The joint law of the first two tokens under the adaptive schedule (which drafts 0, 1 or 2
    tokens depending on the drafter's confidences) is π(x1)·π(x2 | x1), computed from the models."""
    f = family("gpt2")
    e = engine(
        target=f["target"],
        drafter=f["near"],
        rule=rule,
        alpha=alpha,
        temperature=1.0,
        top_k=3,
        schedule="adaptive",
        max_new_tokens=3,
        ignore_eos=True,
    )
    ids = e.encode(PROMPT)

    def pi(prefix: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p_logits = e.target.model(input_ids=prefix[None]).logits[0, -1]
            q_logits = e.drafter.runtime.model(input_ids=prefix[None]).logits[0, -1]
        r = e.rule.defer(S.softmax(q_logits)[None], S.softmax(p_logits)[None])
        return S.mixture(r, S.warp(q_logits, e.params)[None], S.warp(p_logits, e.params)[None])[0]

    first = pi(ids)
    support = [int(i) for i in torch.nonzero(first > 1e-9)]
    joint = {}
    for a in support:
        second = pi(torch.cat([ids, torch.tensor([a])]))
        for b in torch.nonzero(second > 1e-9).flatten().tolist():
            joint[a, b] = float(first[a] * second[b])
    n = 1200
    counts = dict.fromkeys(joint, 0)
    sizes = set()
    for seed in range(n):
        g = e.generate(ids.tolist(), seed=seed, record_decisions=False)
        pair = tuple(g.token_ids[:2])
        assert pair in counts, pair  # nothing outside π's support
        counts[pair] += 1
        sizes.update(s.drafted for s in g.steps)
    assert len(sizes) > 1  # the schedule did vary k
    keys = sorted(joint)
    expected = torch.tensor([joint[k] for k in keys], dtype=torch.float64)
    observed = [counts[k] for k in keys]
    assert chisquare(observed, (expected / expected.sum() * n).numpy()).pvalue > 1e-3


def test_adaptive_refused_where_nothing_is_verified(family):
    f = family("gpt2")
    for mode in ("sequential", "drafter"):
        with pytest.raises(PolicyError, match="decoding.schedule.name.*speculative or lossy"):
            engine(target=f["target"], drafter=f["near"], mode=mode, rule="chow", schedule="adaptive")
    with pytest.raises(PolicyError, match="unknown schedule 'fastest'.*adaptive, bass, confidence, constant"):
        engine(target=f["target"], drafter=f["near"], schedule="fastest")


def test_a_drafter_without_confidence_is_a_clear_error(family, fixed_costs):
    from test_engine import _in_process_plugin

    class Silent(DrafterBase):  # proposes the target's... anything, but never says how sure it is
        name, deterministic = "silent", True

        class Options(__import__("pydantic").BaseModel):
            pass

        def __init__(self, options, ctx):
            pass

        def step(self, ask):
            return DraftStep(tokens=torch.stack([c[-1] for c in ask.contexts]))

    reg = _in_process_plugin("silent-drafter", register_drafters=lambda register: register("silent", Silent))
    f = family("gpt2")
    policy = parse_policy(policy_dict(target=f["target"], plugin="silent", schedule="adaptive"))
    with pytest.raises(PluginError, match="needs the drafter's per-token confidence.*'silent' reports none"):
        Engine.from_policy(policy, registry=reg).generate(PROMPT)


def test_a_third_party_schedule_is_selected_by_name(family):
    from test_engine import _in_process_plugin

    from cascade.schedules.base import DraftPlan, NoOptions, ScheduleBase

    class SizeOptions(NoOptions):
        size: int = 2

    class Fixed(ScheduleBase):
        name = "fixed"
        Options = SizeOptions

        def __init__(self, settings):
            self.k = settings.options.size

        def plan(self, limit):
            return DraftPlan(min(self.k, limit))

        def update(self, drafted, accepted):
            pass

    reg = _in_process_plugin("fixed-schedule", register_schedules=lambda register: register("fixed", Fixed))
    f = family("gpt2")
    d = policy_dict(
        target=f["target"], drafter=f["near"], schedule="fixed", schedule_options={"size": 3}, max_new_tokens=20
    )
    g = Engine.from_policy(parse_policy(d), registry=reg).generate(PROMPT)
    assert {s.block_size for s in g.steps[:-1]} == {3}
    d["decoding"]["schedule"]["options"] = {"sise": 3}
    with pytest.raises(PolicyError, match="decoding.schedule.options.sise"):
        Engine.from_policy(parse_policy(d), registry=reg)


def test_every_combination_of_schedule_and_drafter_runs(family, fixed_costs):
    f = family("gpt2")
    for schedule, kw in itertools.product(BUILTIN_SCHEDULES, (dict(drafter=f["near"]), dict(plugin="ngram"))):
        g = engine(target=f["target"], schedule=schedule, max_new_tokens=16, **kw).generate(PROMPT)
        assert len(g.token_ids) == 16 or g.finish_reason != "length"


def _predictor_registry(seen: list):
    from test_engine import _in_process_plugin

    from cascade.features import FEATURES
    from cascade.schedules.base import NoOptions

    class ScaleOptions(NoOptions):
        scale: float = 1.0

    class Fake:  # acceptance = scale · q(x) at the drafter's top token
        Options = ScaleOptions

        def __init__(self, options):
            self.scale = options.scale

        def predict_acceptance(self, features, positions, context):
            seen.append((features, positions, context))
            return self.scale * features[:, FEATURES.index("q_x")]

    return _in_process_plugin("fake-predictor", register_predictors=lambda register: register("fake", Fake))


def test_an_acceptance_predictor_drives_the_adaptive_schedule(family, fixed_costs):
    """A registered predictor replaces the drafter's confidence; it sees drafter-side features at q's top
    token (rank 0, no target side) and the block context; greedy output stays the target's."""
    from cascade.features import FEATURES

    seen: list = []
    reg = _predictor_registry(seen)
    f = family("gpt2")
    ref = engine(target=f["target"], mode="target", max_new_tokens=24).generate(PROMPT).token_ids
    d = policy_dict(
        target=f["target"],
        drafter=f["near"],
        schedule="adaptive",
        max_new_tokens=24,
        schedule_options={"predictor": "fake", "predictor_options": {"scale": 1.0}},
    )
    e = Engine.from_policy(parse_policy(d), registry=reg)
    g = e.generate(PROMPT, record_decisions=False)
    assert g.token_ids == ref and seen
    for feats, positions, ctx in seen:
        assert (feats[:, FEATURES.index("q_rank")] == 0).all() and feats[:, FEATURES.index("p_x")].isnan().all()
        assert positions.shape == (feats.shape[0],) == (1,) and ctx.sequence_position >= len(e.encode(PROMPT))
    # asked before each draw: position j of a draft after positions 0..j-1 of the same draft
    at = [int(p[0]) for _, p, _ in seen]
    assert at[0] == 0 and all(b in (0, a + 1) for a, b in zip(at, at[1:])) and max(at) > 0
    # scale 0: no draft ever pays, every step is a target step
    d["decoding"]["schedule"]["options"]["predictor_options"] = {"scale": 0.0}
    g0 = Engine.from_policy(parse_policy(d), registry=reg).generate(PROMPT)
    assert g0.token_ids == ref and {s.drafted for s in g0.steps} == {0}


def test_predictor_refusals(family, fixed_costs):
    reg = _predictor_registry([])
    f = family("gpt2")
    d = policy_dict(
        target=f["target"], drafter=f["near"], schedule="adaptive", schedule_options={"predictor": "oracle"}
    )
    with pytest.raises(PolicyError, match="unknown acceptance predictor 'oracle'; installed: fake"):
        Engine.from_policy(parse_policy(d), registry=reg)
    d["decoding"]["schedule"]["options"] = {"predictor": "fake", "predictor_options": {"scal": 2}}
    with pytest.raises(PolicyError, match="predictor_options.scal"):
        Engine.from_policy(parse_policy(d), registry=reg)
    d = policy_dict(target=f["target"], plugin="ngram", schedule="adaptive", schedule_options={"predictor": "fake"})
    with pytest.raises(PluginError, match="needs the drafter's q.*'ngram' is deterministic"):
        Engine.from_policy(parse_policy(d), registry=reg).generate(PROMPT)


def _target_joint(e: Engine, ids: torch.Tensor) -> dict[tuple[int, int], float]:
    """The lossless law of the first two tokens after `ids`: p(x1)·p(x2 | x1) with the engine's warping."""

    def p(prefix: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return S.warp(e.target.model(input_ids=prefix[None]).logits[0, -1], e.params)

    first = p(ids)
    joint = {}
    for a in torch.nonzero(first > 1e-9).flatten().tolist():
        second = p(torch.cat([ids, torch.tensor([a])]))
        for b in torch.nonzero(second > 1e-9).flatten().tolist():
            joint[a, b] = float(first[a] * second[b])
    return joint


@pytest.mark.slow
def test_predictor_driven_sampling_matches_pi(family, fixed_costs):
    """Cutting on predicted acceptance stays exact at T = 1: the first two tokens follow π = p."""
    reg = _predictor_registry([])
    f = family("gpt2")
    d = policy_dict(
        target=f["target"],
        drafter=f["near"],
        temperature=1.0,
        top_k=3,
        schedule="adaptive",
        max_new_tokens=3,
        ignore_eos=True,
        schedule_options={"predictor": "fake", "predictor_options": {"scale": 3.0}},
    )
    e = Engine.from_policy(parse_policy(d), registry=reg)
    ids = e.encode(PROMPT)
    joint = _target_joint(e, ids)
    n = 900
    counts = dict.fromkeys(joint, 0)
    sizes = set()
    for seed in range(n):
        g = e.generate(ids.tolist(), seed=seed, record_decisions=False)
        counts[tuple(g.token_ids[:2])] += 1
        sizes.update(s.drafted for s in g.steps)
    assert len(sizes) > 1
    keys = sorted(joint)
    expected = torch.tensor([joint[k] for k in keys], dtype=torch.float64)
    assert chisquare([counts[k] for k in keys], (expected / expected.sum() * n).numpy()).pvalue > 1e-3


def test_adaptive_skips_the_drafter_when_drafting_has_not_paid_lately():
    """From history alone: while drafting has not paid, only every PROBE_EVERY-th step drafts (one token)."""
    from cascade.schedules.builtin import PROBE_EVERY

    costly = CostTable(0.3, (1.0, 1.5, 1.8))  # one draft pays only above (0.3 + 1.5) − 1 = 0.8 acceptance
    a = Adaptive(ScheduleSettings(AdaptiveOptions(max_block_size=2), costs=costly))
    ks = []
    for _ in range(3 * PROBE_EVERY):
        plan = a.plan(10)
        ks.append(plan.k)
        a.update(plan.k, 0)  # every draft rejected
    # a probe (every PROBE_EVERY-th step) drafts one token, the least that measures the first draft's acceptance
    assert {i: k for i, k in enumerate(ks) if k} == {i: 1 for i in range(0, 3 * PROBE_EVERY, PROBE_EVERY)}
    for _ in range(20):  # drafts that keep being accepted make drafting pay again (a step is planned, then verified)
        a.update(2, 2)
        a.plan(10)
    assert a.first_acceptance() > 0.8 and a.plan(10).k == 2


def test_bass_grows_after_a_row_kept_everything_and_shrinks_faster_when_shrinking_again():
    from cascade.schedules.builtin import Bass

    s = Bass(ScheduleSettings(GrowShrinkOptions(block_size=7, min_block_size=1, max_block_size=32)))
    assert s.plan(100).k == 7
    for drafted, accepted in ((7, 2), (7, 7), (7, 0)):  # one row of three kept all 7
        s.update(drafted, accepted)
    assert s.plan(100).k == 9 and s.plan(3).k == 3  # +2; the budget still caps a row's k
    s.update(9, 4)
    s.update(9, 1)
    assert s.plan(100).k == 8  # 9 − ⌈9/10⌉ − 0, and at least x_max = 4
    s.update(8, 2)
    assert s.plan(100).k == 6  # 8 − ⌈8/10⌉ − 1: shrinking again
    s.update(6, 5)
    assert s.plan(100).k == 5  # never below the best row's x_max


def test_survival_stop_looks_past_a_dip_in_measured_costs():
    """Costs measured on a CPU: a call over 3 tokens costs what one over 9 does, so E/C dips at 2 drafts and
    rises again. For constant confidences (the later drafts then are as likely as the one in hand) the stop
    is exactly SPEC's argmax; stopping at the first drop would verify one draft."""
    stepped = SurvivalStop(0.0, (1.0, 1.5, 1.95, 1.95, 1.97, 2.07, 2.12, 2.12, 2.14))
    for a in (0.3, 0.45, 0.55, 2 / 3, 0.8, 0.95):
        confs = [a] * 8
        expected = [1.0 + sum(a**i for i in range(1, k + 1)) for k in range(9)]
        ratio = [e / stepped.cost(k) for k, e in enumerate(expected)]
        assert cut(confs, stepped) == max(range(9), key=ratio.__getitem__), a
    assert cut([2 / 3] * 8, stepped) == 8 and cut([0.3] * 8, stepped) == 0
    assert cut([0.9, 0.9, 0.05], stepped) == 3  # a 4-token call costs what a 3-token one does: a free draft
    assert cut([0.9, 0.9, 0.9, 0.9, 0.05, 0.9], stepped) == 4  # where it costs more, a doubted draft ends the block


def test_a_batch_shares_one_budget_the_width_with_the_most_expected_tokens_per_cost():
    """Rows verified in one call padded to the widest: the budget is the width m maximising Σ_b E_b(m) / C(m)
    (SPEC.md's top prefixes by survival), exactly for constant confidences; each row keeps its first m drafts."""
    stepped = SurvivalStop(0.0, (1.0, 1.5, 1.95, 1.95, 1.97, 2.07, 2.12, 2.12, 2.14))
    for rows in (
        [[0.9] * 8, [0.2] * 8],
        [[0.5] * 8, [0.6] * 8, [0.3] * 8],
        [[0.95] * 8, [0.1] * 3, []],
        [[0.3] * 8, [0.35] * 8],
        [[0.7] * 8] * 4,
    ):
        expected = [
            sum(1 + sum(math.prod(r[:i]) for i in range(1, min(m, len(r)) + 1)) for r in rows) for m in range(9)
        ]
        ratio = [e / stepped.cost(m) for m, e in enumerate(expected)]
        best = max(range(9), key=ratio.__getitem__)
        kept = cut_batch(rows, stepped)
        assert kept == [min(best, len(r)) for r in rows], rows
    # a doubtful row alone would verify nothing; beside a confident one its drafts ride in the padding
    assert cut([0.2] * 8, stepped) == 0
    assert cut_batch([[0.9] * 8, [0.2] * 8], stepped) == [8, 8]
    assert stepped([[0.6, 0.5], [0.4]]) == [stepped.stops([[0.6, 0.5], [0.4]])] * 2  # the batch stops together


def test_the_batch_rule_reads_only_the_confidences_so_far():
    stop = SurvivalStop(TABLE.draft_seconds, TABLE.verify_seconds)
    head = [[0.9, 0.03], [0.5, 0.04]]
    widths = {max(cut_batch([h + t for h in head], stop)) for t in ([], [0.99, 0.99], [0.1])}
    assert len(widths) == 1


def test_adaptive_shares_one_schedule_across_a_batch():
    """Rows draft or not together (one row drafting widens the whole batch's call) and share one estimate."""
    costly = CostTable(0.3, (1.0, 1.5, 1.8))
    a = Adaptive(ScheduleSettings(AdaptiveOptions(max_block_size=2), costs=costly))
    assert Adaptive.shared
    plans = a.plan_batch([5, 1, 0])
    assert [p.k for p in plans] == [1, 1, 0]  # the first step probes: one draft each, within each row's budget
    for accepted in (0, 0, 0):
        a.update(1, accepted)
    assert [p.k for p in a.plan_batch([5, 5, 5])] == [0, 0, 0]  # none kept: the whole batch skips the drafter
    cheap = Adaptive(ScheduleSettings(AdaptiveOptions(max_block_size=4), costs=TABLE))
    plans = cheap.plan_batch([9, 9])
    assert all(p.stop is cheap.stop for p in plans)  # one rule object: the rows are judged together
    (one,) = cheap.plan_batch([9])
    assert one.stop is cheap.stop  # one row: the same rule over a batch of one


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_adaptive_batches_are_lossless_and_share_their_width(family, arch, fixed_costs):
    f = family(arch)
    prompts = [PROMPT, "import os\n", "x", "for i in range(10):\n    print(i)\n"]
    ref = [engine(target=f["target"], mode="target", max_new_tokens=24).generate(p).token_ids for p in prompts]
    for kw in (dict(drafter=f["near"]), dict(plugin="ngram")):
        e = engine(target=f["target"], schedule="adaptive", max_block_size=6, max_new_tokens=24, **kw)
        got = e.generate(prompts, batch_size=4)
        assert [g.token_ids for g in got] == ref, kw
        steps: dict[int, list] = {}
        for g in got:
            for s in g.steps:
                steps.setdefault(s.index, []).append(s)
        widths = set()
        for records in steps.values():
            if len(records) == 4:  # every row still in the batch: one width, each row's draft cut to it (or a
                # shorter one: its budget, or the drafter found nothing more)
                width = max(s.drafted for s in records)
                assert all(s.drafted in (min(width, s.block_size), *range(s.block_size)) for s in records), [
                    (s.drafted, s.block_size, s.accepted) for s in records
                ]
                widths.add(width)
        assert len(widths) > 1, kw  # the shared budget varied


@pytest.mark.slow
def test_adaptive_batched_sampling_matches_pi_over_two_tokens(family, fixed_costs):
    """Row 1 of a batch of two under the shared budget (which verifies 0, 1 or 2 of its drafts depending on
    both rows' confidences): the joint law of its first two tokens is π(x1)·π(x2 | x1)."""
    f = family("gpt2")
    e = engine(
        target=f["target"],
        drafter=f["near"],
        temperature=1.0,
        top_k=3,
        schedule="adaptive",
        max_new_tokens=3,
        ignore_eos=True,
    )
    ids = e.encode(PROMPT)
    mate = e.encode("import os\n").tolist()
    joint = _target_joint(e, ids)
    n = 1000
    counts = dict.fromkeys(joint, 0)
    sizes = set()
    for seed in range(n):
        g = e.generate([mate, ids.tolist()], seed=seed, record_decisions=False, batch_size=2)[1]
        pair = tuple(g.token_ids[:2])
        assert pair in counts, pair
        counts[pair] += 1
        sizes.update(s.drafted for s in g.steps)
    assert len(sizes) > 1
    keys = sorted(joint)
    expected = torch.tensor([joint[k] for k in keys], dtype=torch.float64)
    assert chisquare([counts[k] for k in keys], (expected / expected.sum() * n).numpy()).pvalue > 1e-3


def test_another_batch_size_reads_a_cost_table_timed_for_it(family, monkeypatch):
    """A cost table is a batch's step: decoding B rows at a time under a policy timed for 1 derives the policy to
    decoding.batch_size = B (one source of truth) and reads the table for B, once."""
    asked = []

    def table(engine, max_k, remeasure=False):
        asked.append(engine.policy.decoding.batch_size)
        return TABLE, None, False

    monkeypatch.setattr(profile, "cost_table", table)
    f = family("gpt2")
    e = engine(target=f["target"], drafter=f["near"], schedule="adaptive", max_new_tokens=6, ignore_eos=True)
    alone = [g.token_ids for g in e.generate([PROMPT, "import os\n"])]
    batched = e.generate([PROMPT, "import os\n"], batch_size=2)
    e.generate([PROMPT, "import os\n"], batch_size=2)
    assert asked == [1, 2] and [g.token_ids for g in batched] == alone  # greedy: the same tokens
    assert e.with_batch_size(2).policy.decoding.batch_size == 2 and e.with_batch_size(1) is e
