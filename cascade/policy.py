"""Policies in YAML: the schema (pydantic, extra="forbid") and loading with clear errors.

    name: spec-cascade-v3
    target: {model: <hub id or folder>, dtype: float32}
    drafter: {plugin: hf-model, options: {model: <hub id or folder>}}
    mode: speculative            # target | drafter | sequential | speculative | lossy
    rule: {name: token_v3, alpha: 0.3}
    decoding: {temperature: 0.0, top_p: 1.0, max_new_tokens: 128, seed: 0,
               schedule: {name: constant, options: {block_size: 4}}}

Schema errors name the field and say how to fix it. `check_policy` then checks what
needs the installed plugins: the drafter and rule names, the drafter's options,
α inside the rule's range, and rule/drafter/mode combinations SPEC.md forbids.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.errors import PolicyError

Mode = Literal["target", "drafter", "sequential", "speculative", "lossy"]
MODES: tuple[str, ...] = get_args(Mode)
VERIFYING_MODES = ("speculative", "lossy")  # the modes with a verification step (num_drafts, τ, the ceiling)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    model: str = Field(min_length=1, description="hub id or local folder")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"  # auto: CUDA when present, else CPU
    revision: str | None = None
    trust_remote_code: bool = False  # only when the policy asks for it
    # a GGUF checkpoint in the `model` folder (de-quantized on load; `cascade models import` converts it once)
    gguf_file: str | None = Field(default=None, min_length=1)
    # how the model runs: `lean` = cascade's own forward over the model's weights (GPT-2, Llama, Qwen2;
    # docs/fast-path.md), `transformers` = the model's own forward (the reference), `auto` = lean where
    # it applies, else transformers
    runtime: Literal["auto", "lean", "transformers"] = "auto"


class DrafterSpec(_Strict):
    plugin: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class RuleSpec(_Strict):
    name: str = "none"
    alpha: float = 0.0
    options: dict[str, Any] = Field(default_factory=dict)  # validated against the rule's `Options` (rule_options)


class ScheduleSpec(_Strict):
    """`decoding.schedule`: a registered schedule by name and its options (validated against its `Options`)."""

    name: str = Field("constant", min_length=1)  # constant, heuristic, bass, confidence, adaptive, or a plugin's
    options: dict[str, Any] = Field(default_factory=dict)


# the flat keys `decoding.schedule` replaced (deprecated, read for one release)
LEGACY_SCHEDULE_KEYS = (
    "block_size",
    "block_schedule",
    "schedule_options",
    "min_block_size",
    "max_block_size",
    "confidence",
)


class Decoding(_Strict):
    temperature: float = Field(0.0, ge=0.0)  # 0 = greedy
    top_k: int = Field(0, ge=0)  # 0 = off
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    schedule: ScheduleSpec = ScheduleSpec()  # how many tokens to draft per step (cascade.schedules)
    lenience: float = Field(1.0, gt=0.0, le=1.0)  # `lossy` mode: accept min(1, p / (l·q)); 1 = lossless
    max_new_tokens: int = Field(128, ge=1)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)  # stop strings (not included in the text)
    ignore_eos: bool = False
    batch_size: int = Field(1, ge=1, le=256)  # rows decoded together (SPEC.md "Batched decoding")

    @model_validator(mode="before")
    @classmethod
    def _legacy_schedule(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(key in data for key in LEGACY_SCHEDULE_KEYS):
            return legacy_schedule(data)
        return data


def legacy_schedule(data: dict[str, Any]) -> dict[str, Any]:
    """`decoding` with the deprecated flat keys (block_size, block_schedule, schedule_options, min_block_size,
    max_block_size, confidence) moved into `schedule: {name, options}`, with a FutureWarning showing the new
    form. A built-in schedule gets the keys it declares (the others never changed what it drafts); a plugin's
    gets them all, to accept or refuse in its `Options`."""
    from cascade.schedules.builtin import BUILTIN_SCHEDULES

    if "schedule" in data:
        raise ValueError(
            "decoding.schedule replaces the flat keys "
            f"{', '.join(k for k in LEGACY_SCHEDULE_KEYS if k in data)}: move them into decoding.schedule.options"
        )
    old = {key: data[key] for key in LEGACY_SCHEDULE_KEYS if key in data}
    rest = {key: value for key, value in data.items() if key not in LEGACY_SCHEDULE_KEYS}
    name = old.pop("block_schedule", "constant")
    options = dict(old.pop("schedule_options", None) or {})
    builtin = BUILTIN_SCHEDULES.get(name) if isinstance(name, str) else None
    declared = None if builtin is None else builtin.Options.model_fields
    ignored = [key for key in old if declared is not None and key not in declared]
    for key, value in old.items():
        if key not in ignored:
            options.setdefault(key, value)
    new = {"name": name, "options": options}
    warnings.warn(
        f"the flat schedule keys decoding.{', decoding.'.join(k for k in LEGACY_SCHEDULE_KEYS if k in data)} are "
        f"deprecated (read until the next release): write `decoding: {{schedule: {_flow(new)}}}`"
        + (f" ({', '.join(ignored)} dropped: schedule {name!r} does not read them)" if ignored else ""),
        FutureWarning,
        stacklevel=2,
    )
    return {**rest, "schedule": new}


def _flow(value: Any) -> str:
    """A value in YAML's flow style, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()


class StoreSpec(_Strict):
    url: str | None = None  # SQLAlchemy URL; default: cascade.db in the user's folder (cascade.store.urls)
    enabled: bool = True


SEQUENTIAL_BATCH = (
    "mode 'sequential' decodes one row at a time (each row calls the target only where it defers, "
    "so rows share no target call): use decoding.batch_size: 1, or mode speculative"
)


class Policy(_Strict):
    name: str = Field(min_length=1)
    target: ModelSpec
    drafter: DrafterSpec | None = None
    mode: Mode = "speculative"
    rule: RuleSpec = RuleSpec()
    decoding: Decoding = Decoding()
    store: StoreSpec = StoreSpec()
    description: str | None = None
    # where the policy file lives: relative model folders resolve against it (not a YAML key)
    base_dir: Path | None = Field(default=None, exclude=True)
    source_text: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _needs_drafter(self):
        if self.mode != "target" and self.drafter is None:
            raise ValueError(
                f"mode {self.mode!r} needs a drafter: add `drafter: {{plugin: hf-model, options: {{model: ...}}}}`"
            )
        if self.mode == "sequential" and self.decoding.batch_size > 1:
            raise ValueError(SEQUENTIAL_BATCH)
        return self

    @property
    def sha256(self) -> str:
        return hashlib.sha256((self.source_text or self.model_dump_json()).encode()).hexdigest()

    @property
    def verifies(self) -> bool:
        """Whether the mode has a verification step (speculative, lossy)."""
        return self.mode in VERIFYING_MODES

    def derive(
        self, name: str, updates: dict[str, Any] | None = None, drop: tuple[str, ...] = ("description",)
    ) -> Policy:
        """A validated copy named `name`: `updates` merged into the YAML data (nested mappings merge key
        by key; a schedule named anew starts from its own options), the top-level keys in `drop` removed. A
        target-only result drops the drafter."""
        data = self.model_dump(mode="json", exclude=set(drop))
        schedule = dict(updates or {}).get("decoding", {}).get("schedule")
        if (
            isinstance(schedule, dict)
            and schedule.get("name", self.decoding.schedule.name) != self.decoding.schedule.name
        ):
            data["decoding"]["schedule"] = {}
        _merge(data, dict(updates or {}, name=name))
        if data.get("mode") == "target":
            data.pop("drafter", None)
        return parse_policy(data, f"<{name}, derived from {self.name}>", self.base_dir)


def _merge(into: dict[str, Any], updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


NO_DRAFTERS = (
    ". cascade itself ships no drafter: the built-in ones are the distributions cascade-hf-model and "
    "cascade-ngram, in the checkout's plugins/ folder; install them with "
    "`pip install ./plugins/hf-model ./plugins/ngram` (scripts/setup.sh does), or any third-party drafter plugin"
)

FIXES = {
    "extra_forbidden": "remove it or check its spelling",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
}


def _format_errors(title: str, exc: ValidationError, prefix: str = "") -> str:
    """One line per error: the field's dotted path (under `prefix`), the message, what was given, the fix."""
    lines = [title]
    for err in exc.errors():
        loc = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "(top level)"
        msg = err["msg"]
        fix = FIXES.get(err["type"], "")
        got = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  field `{loc}`: {msg}{shown}" + (f"; fix: {fix}" if fix else ""))
    return "\n".join(lines)


def parse_policy(data: Any, source: str = "<policy>", base_dir: Path | None = None, text: str | None = None) -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy is a YAML mapping (key: value), got {type(data).__name__}")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", FutureWarning)
            policy = Policy(**data, base_dir=base_dir, source_text=text)
        for w in seen:  # named by the policy's source (its file), once per source and message
            warnings.warn(f"{source}: {w.message}", w.category, stacklevel=2)
        return policy
    except ValidationError as exc:
        raise PolicyError(_format_errors(f"{source}: invalid policy", exc)) from None
    except TypeError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    return parse_policy(data, str(path), path.parent.resolve(), text)


def check_policy(policy: Policy, registry: Any) -> None:
    """Checks that need the installed plugins; raises one PolicyError listing every problem found, each naming
    the field and the fix (a check that depends on an unknown rule or drafter is skipped, not guessed at)."""
    errors: list[str] = []

    def attempt(check: Callable[[], Any]) -> Any:
        try:
            return check()
        except PolicyError as exc:
            errors.append(str(exc))
            return None

    needs = attempt(lambda: _check_rule(policy, registry))  # (reads_q, reads_p), None when the rule is wrong
    if policy.drafter is not None and policy.mode != "target":
        attempt(lambda: _check_drafter(policy, registry, needs))
    if policy.mode == "sequential" and needs is not None and needs[1]:
        errors.append(
            f"{policy.name}: field `rule.name`: the sequential cascade decides before calling the target, so its "
            f"rule must read q only; {policy.rule.name!r} reads p with these options (use chow, or a learned head "
            "trained on drafter-side features: `cascade rules train --features q`)"
        )
    attempt(lambda: _check_schedule(policy, registry))
    if policy.mode == "lossy" and policy.rule.name != "none":
        errors.append(f"{policy.name}: field `rule.name`: lossy mode uses `decoding.lenience`, set rule.name to none")
    if len(errors) == 1:
        raise PolicyError(errors[0])
    if errors:
        raise PolicyError(f"{policy.name}: {len(errors)} problems:\n" + "\n".join(f"  - {e}" for e in errors))


def _check_rule(policy: Policy, registry: Any) -> tuple[bool, bool]:
    """The rule exists, its options validate and α is in its range; what it reads (q, p) with these options."""
    src = policy.name
    rule_cls = registry.rules.get(policy.rule.name)
    if rule_cls is None:
        raise PolicyError(
            f"{src}: field `rule.name`: unknown rule {policy.rule.name!r}; installed rules: "
            f"{', '.join(sorted(registry.rules))}"
        )
    options = rule_options(policy, rule_cls)
    reads_q, reads_p = rule_cls.requirements(options)  # with these options (a learned head's: from its card)
    lo, hi = rule_cls.alpha_range
    a = policy.rule.alpha
    if not (min(lo, hi) <= a <= max(lo, hi)):
        raise PolicyError(
            f"{src}: field `rule.alpha`: {a} is outside rule {policy.rule.name!r}'s range "
            f"[{min(lo, hi)}, {max(lo, hi)}] "
            f"({lo} = speculative end, {hi} = drafter-only end)"
        )
    return reads_q, reads_p


def _check_drafter(policy: Policy, registry: Any, needs: tuple[bool, bool] | None) -> None:
    src = policy.name
    assert policy.drafter is not None
    drafter_cls = registry.drafters.get(policy.drafter.plugin)
    if drafter_cls is None:
        raise PolicyError(
            f"{src}: field `drafter.plugin`: unknown drafter {policy.drafter.plugin!r}; installed drafters: "
            f"{', '.join(sorted(registry.drafters)) or '(none)'}{NO_DRAFTERS if not registry.drafters else ''}"
        )
    drafter_options(policy, drafter_cls)
    if drafter_cls.deterministic:
        if needs is not None and needs[0]:
            raise PolicyError(
                f"{src}: field `rule.name`: rule {policy.rule.name!r} needs drafter probabilities, but drafter "
                f"{policy.drafter.plugin!r} is deterministic (no q); use none, token_v2 or token_v3, "
                "or a probabilistic drafter such as hf-model"
            )
        if policy.mode in ("drafter", "sequential"):
            raise PolicyError(
                f"{src}: field `mode`: mode {policy.mode!r} needs a drafter that decodes on its own; "
                f"{policy.drafter.plugin!r} is deterministic (it only proposes continuations)"
            )


def _check_schedule(policy: Policy, registry: Any) -> None:
    src = policy.name
    opts = schedule_options(policy, _schedule_class(policy, registry))
    name = getattr(opts, "predictor", None)
    if name is not None:
        predictors = getattr(registry, "predictors", {})
        if name not in predictors:
            raise PolicyError(
                f"{src}: field `decoding.schedule.options.predictor`: unknown acceptance predictor "
                f"{name!r}; installed: {', '.join(sorted(predictors)) or '(none)'}"
            )
        predictor_options(policy, predictors[name])


def _schedule_class(policy: Policy, registry: Any) -> type:
    from cascade.schedules.builtin import BUILTIN_SCHEDULES

    src, name = policy.name, policy.decoding.schedule.name
    schedules = getattr(registry, "schedules", BUILTIN_SCHEDULES)
    cls = schedules.get(name)
    if cls is None:
        raise PolicyError(
            f"{src}: field `decoding.schedule.name`: unknown schedule {name!r}; installed schedules: "
            f"{', '.join(sorted(schedules))}"
        )
    if cls.needs_costs and policy.mode not in VERIFYING_MODES:
        raise PolicyError(
            f"{src}: field `decoding.schedule.name`: schedule {name!r} chooses how many drafts to "
            f"verify, which needs mode speculative or lossy (this policy's mode is {policy.mode!r})"
        )
    return cls


def schedule_options(policy: Policy, schedule_cls: Any) -> Any:
    """The schedule's typed options, validated from `decoding.schedule.options`."""
    return _options(
        schedule_cls.Options,
        policy.decoding.schedule.options,
        f"{policy.name}: invalid options for schedule {policy.decoding.schedule.name!r}",
        "decoding.schedule.options",
        policy.base_dir,
    )


def predictor_options(policy: Policy, predictor_cls: type) -> Any:
    """The acceptance predictor's typed options, from `decoding.schedule.options.predictor_options`."""
    values = policy.decoding.schedule.options.get("predictor_options") or {}
    return _options(
        getattr(predictor_cls, "Options", None),
        dict(values),
        f"{policy.name}: invalid options for acceptance predictor "
        f"{policy.decoding.schedule.options.get('predictor')!r}",
        "decoding.schedule.options.predictor_options",
        policy.base_dir,
    )


def drafter_options(policy: Policy, drafter_cls: type) -> Any:
    """The drafter's typed options, validated from the policy."""
    assert policy.drafter is not None
    return _options(
        getattr(drafter_cls, "Options", None),
        policy.drafter.options,
        f"{policy.name}: invalid options for drafter {policy.drafter.plugin!r}",
        "drafter.options",
        policy.base_dir,
    )


def rule_options(policy: Policy, rule_cls: type) -> Any:
    """The rule's typed options, validated from the policy (a rule without `Options` takes none)."""
    from cascade.rules import NoOptions

    return _options(
        getattr(rule_cls, "Options", NoOptions),
        policy.rule.options,
        f"{policy.name}: invalid options for rule {policy.rule.name!r}",
        "rule.options",
        policy.base_dir,
    )


def _options(
    model: type[BaseModel] | None, values: dict[str, Any], title: str, prefix: str, base_dir: Path | None = None
) -> Any:
    """Validate a plugin's options. Validators see the policy file's folder as the context `base_dir`, so a
    plugin can resolve relative paths against it (as cascade does for model folders)."""
    if model is None:
        return dict(values)
    try:
        return model.model_validate(dict(values), context={"base_dir": base_dir})
    except ValidationError as exc:
        raise PolicyError(_format_errors(title, exc, prefix)) from None
