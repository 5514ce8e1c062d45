"""Policy loading and validation: every bad input gets a message naming the field and the fix."""

from pathlib import Path

import pytest
import yaml

from cascade.errors import PolicyError
from cascade.plugins import registry
from cascade.policy import check_policy, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[1]


def base(**over):
    d = {
        "name": "p",
        "target": {"model": "some/model"},
        "drafter": {"plugin": "hf-model", "options": {"model": "x"}},
        "mode": "speculative",
        "rule": {"name": "token_v3", "alpha": 0.3},
    }
    d.update(over)
    return d


def error_of(data) -> str:
    with pytest.raises(PolicyError) as exc:
        check_policy(parse_policy(data), registry())
    return str(exc.value)


def test_shipped_policies_validate():
    files = sorted((REPO / "policies").glob("*.yaml"))
    assert len(files) >= 8
    modes = set()
    for f in files:
        p = load_policy(f)
        check_policy(p, registry())
        modes.add(p.mode)
        assert p.base_dir == f.parent.resolve()
    assert modes == {"target", "drafter", "sequential", "speculative", "lossy"}


def test_real_target_policies_validate():
    """The real-target track's policies (their target is fetched, not shipped: validating loads no model)."""
    files = sorted((REPO / "policies" / "real").glob("*.yaml"))
    assert len(files) >= 9
    for f in files:
        p = load_policy(f)
        check_policy(p, registry())
        assert p.target.model == "../../models/real/smollm2-135m" and p.name.startswith("real-")


def test_unknown_key_names_the_field():
    msg = error_of(base(decodng={"temperature": 0}))
    assert "`decodng`" in msg and "remove it or check its spelling" in msg
    msg = error_of(base(decoding={"temprature": 0.5}))
    assert "`decoding.temprature`" in msg


def test_wrong_type_names_the_field_and_value():
    msg = error_of(base(decoding={"temperature": "hot"}))
    assert "`decoding.temperature`" in msg and "'hot'" in msg
    assert "`decoding.schedule.options.block_size`" in error_of(
        base(decoding={"schedule": {"name": "constant", "options": {"block_size": 0}}})
    )
    assert "`mode`" in error_of(base(mode="fast"))


def test_alpha_outside_the_rule_range():
    msg = error_of(base(rule={"name": "chow", "alpha": 1.5}))
    assert "`rule.alpha`" in msg and "[0.0, 1.0]" in msg


def test_rule_that_needs_q_with_deterministic_drafter():
    for rule in ("chow", "diff", "opt", "token_v1"):
        msg = error_of(base(drafter={"plugin": "ngram"}, rule={"name": rule, "alpha": 0.1}))
        assert "needs drafter probabilities" in msg and "ngram" in msg
    for rule in ("none", "token_v2", "token_v3"):
        check_policy(parse_policy(base(drafter={"plugin": "ngram"}, rule={"name": rule, "alpha": 0.1})), registry())


def test_unknown_drafter_and_rule_list_installed_names():
    msg = error_of(base(drafter={"plugin": "medusa"}))
    assert "unknown drafter 'medusa'" in msg and "hf-model" in msg and "ngram" in msg and "eagle" in msg
    msg = error_of(base(rule={"name": "token_v9"}))
    assert "unknown rule 'token_v9'" in msg and "token_v3" in msg and "chow" in msg


def test_bad_drafter_options():
    msg = error_of(
        base(drafter={"plugin": "ngram", "options": {"min_ngram": 4, "max_ngram": 2}}, rule={"name": "none"})
    )
    assert "drafter 'ngram'" in msg and "min_ngram" in msg
    msg = error_of(base(drafter={"plugin": "hf-model", "options": {"modle": "x"}}))
    assert "`drafter.options.modle`" in msg
    msg = error_of(base(drafter={"plugin": "hf-model", "options": {}}))
    assert "`drafter.options.model`" in msg and "add it" in msg


def test_mode_combinations():
    assert "sequential" in error_of(base(mode="sequential", rule={"name": "token_v3", "alpha": 0.3}))
    assert "deterministic" in error_of(base(mode="drafter", drafter={"plugin": "ngram"}, rule={"name": "none"}))
    assert "needs a drafter" in error_of({"name": "p", "target": {"model": "m"}, "mode": "speculative"})


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="YAML mapping"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "missing.yaml")


def test_round_trip_and_hash(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(base()))
    p = load_policy(f)
    assert p.rule.alpha == 0.3 and p.decoding.schedule.name == "constant" and len(p.sha256) == 64


def test_rule_options_are_validated_against_the_rule():
    msg = error_of(base(rule={"name": "token_v3", "alpha": 0.3, "options": {"temprature": 2}}))
    assert "rule 'token_v3'" in msg and "`rule.options.temprature`" in msg and "remove it" in msg


def test_a_rule_with_typed_options_gets_them_built():
    import types

    from pydantic import BaseModel, ConfigDict, Field

    from cascade.hookspecs import hookimpl
    from cascade.plugins import build_registry
    from cascade.policy import rule_options
    from cascade.rules import TokenV3

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        threshold: float = Field(0.5, ge=0, le=1)

    class Scaled(TokenV3):
        name = "scaled"

    Scaled.Options = Options
    module = types.ModuleType("scaled-rule")
    module.register_rules = hookimpl(lambda register: register("scaled", Scaled))
    reg = build_registry(extra=[("scaled-rule", module)])
    with pytest.raises(PolicyError, match=r"`rule.options.threshold`: Input should be less than or equal to 1"):
        check_policy(parse_policy(base(rule={"name": "scaled", "alpha": 0.2, "options": {"threshold": 3}})), reg)
    policy = parse_policy(base(rule={"name": "scaled", "alpha": 0.2, "options": {"threshold": 0.25}}))
    check_policy(policy, reg)
    rule = Scaled(policy.rule.alpha, rule_options(policy, Scaled))
    assert rule.options.threshold == 0.25 and rule.alpha == 0.2


def test_no_drafter_installed_says_how_to_get_the_built_in_ones(monkeypatch):
    from cascade.plugins import build_registry

    monkeypatch.setenv("CASCADE_PLUGINS", "")  # a plain `pip install .`: no drafter distribution
    with pytest.raises(PolicyError) as exc:
        check_policy(parse_policy(base()), build_registry())
    msg = str(exc.value)
    assert "installed drafters: (none)" in msg and "pip install ./plugins/hf-model ./plugins/ngram" in msg


def test_a_rule_whose_needs_depend_on_its_options_is_checked_by_them():
    """`requirements(options)` overrides reads_q / reads_p at load: a head that reads p is refused in the
    sequential cascade, one that reads q with a deterministic drafter; a q-only one passes."""
    import types

    from pydantic import BaseModel, ConfigDict

    from cascade.hookspecs import hookimpl
    from cascade.plugins import build_registry
    from cascade.rules import Chow

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sides: str = "q"

    class Headed(Chow):
        name = "headed"

        @classmethod
        def requirements(cls, options):
            return "q" in options.sides, "p" in options.sides

    Headed.Options = Options
    module = types.ModuleType("headed-rule")
    module.register_rules = hookimpl(lambda register: register("headed", Headed))
    reg = build_registry(extra=[("headed-rule", module)])
    seq = dict(mode="sequential", rule={"name": "headed", "alpha": 0.5, "options": {"sides": "qp"}})
    with pytest.raises(PolicyError, match="sequential cascade.*reads p with these options.*--features q"):
        check_policy(parse_policy(base(**seq)), reg)
    check_policy(parse_policy(base(**dict(seq, rule={"name": "headed", "alpha": 0.5, "options": {"sides": "q"}}))), reg)
    ngram = base(drafter={"plugin": "ngram", "options": {}}, rule={"name": "headed", "alpha": 0.5})
    with pytest.raises(PolicyError, match="needs drafter probabilities"):
        check_policy(parse_policy(ngram), reg)
    ngram["rule"]["options"] = {"sides": "p"}
    check_policy(parse_policy(ngram), reg)


def test_each_schedule_declares_its_options():
    grow = {"name": "bass", "options": {"block_size": 3, "min_block_size": 1, "max_block_size": 8}}
    check_policy(parse_policy(base(decoding={"schedule": grow})), registry())
    msg = error_of(base(decoding={"schedule": {"name": "constant", "options": {"max_block_size": 8}}}))
    assert "`decoding.schedule.options.max_block_size`" in msg and "remove it" in msg
    bounds = {"name": "heuristic", "options": {"min_block_size": 9, "max_block_size": 8}}
    assert "min_block_size must be <= max_block_size" in error_of(base(decoding={"schedule": bounds}))
    msg = error_of(base(decoding={"schedule": {"name": "confidence", "options": {"confidence": 1.5}}}))
    assert "`decoding.schedule.options.confidence`" in msg


def test_the_flat_schedule_keys_still_work_with_a_deprecation_message():
    legacy = {"block_size": 3, "block_schedule": "bass", "min_block_size": 1, "max_block_size": 8, "confidence": 0.3}
    with pytest.warns(FutureWarning, match="deprecated.*schedule: {name: bass, options:") as seen:
        p = parse_policy(base(decoding=dict(legacy, temperature=0.5)))
    assert "confidence dropped: schedule 'bass' does not read them" in str(seen[0].message)
    assert p.decoding.schedule.name == "bass" and p.decoding.temperature == 0.5
    assert p.decoding.schedule.options == {"block_size": 3, "min_block_size": 1, "max_block_size": 8}
    with pytest.warns(FutureWarning):
        q = parse_policy(base(decoding={"block_schedule": "adaptive", "schedule_options": {"predictor": "x"}}))
    assert q.decoding.schedule.options == {"predictor": "x"}
    with pytest.warns(FutureWarning):  # a plugin's schedule gets every flat key, to accept or refuse
        r = parse_policy(base(decoding={"block_schedule": "mine", "block_size": 5}))
    assert r.decoding.schedule.options == {"block_size": 5}
    with pytest.raises(PolicyError, match="decoding.schedule replaces the flat keys block_size"):
        parse_policy(base(decoding={"block_size": 3, "schedule": {"name": "constant"}}))


def test_deriving_another_schedule_starts_from_its_own_options():
    p = parse_policy(base(decoding={"schedule": {"name": "constant", "options": {"block_size": 3}}}))
    same = p.derive("q", {"decoding": {"schedule": {"options": {"block_size": 5}}}})
    assert same.decoding.schedule.options == {"block_size": 5}
    other = p.derive("r", {"decoding": {"schedule": {"name": "adaptive", "options": {"max_block_size": 6}}}})
    assert other.decoding.schedule.model_dump() == {"name": "adaptive", "options": {"max_block_size": 6}}


def test_every_problem_in_a_policy_is_reported_at_once():
    msg = error_of(
        base(
            rule={"name": "token_v3", "alpha": 7.0},
            drafter={"plugin": "no-such-drafter"},
            decoding={"schedule": {"name": "no-such-schedule"}},
        )
    )
    assert msg.startswith("p: 3 problems:\n  - p: field `rule.alpha`: 7.0 is outside")
    assert "field `drafter.plugin`: unknown drafter 'no-such-drafter'" in msg
    assert "field `decoding.schedule.name`: unknown schedule 'no-such-schedule'" in msg
    one = error_of(base(rule={"name": "token_v3", "alpha": 7.0}))
    assert one.startswith("p: field `rule.alpha`") and "problems" not in one  # one problem: said as before
    unknown = error_of(base(rule={"name": "no-such-rule"}, drafter={"plugin": "ngram"}, mode="sequential"))
    assert unknown.startswith("p: 2 problems:") and "unknown rule 'no-such-rule'" in unknown  # no guess at q/p
    assert "mode 'sequential' needs a drafter that decodes on its own" in unknown
