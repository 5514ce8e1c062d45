"""Cost tables for the adaptive schedule: measured on this machine, cached on disk with provenance.

A `CostTable` (`cascade.schedules.costs`) holds what one drafter step and one target call over n tokens
(n = 1..K+1) cost here, in seconds, measured with `cascade.runtime.costmodel.step_costs` (the engine's own
cached forward, median of several timed calls) and forced monotone (a longer call never costs less), and what
each step of the decode loop costs besides its forwards (timed through the engine's own
target-only loop: sampling, the cache and bookkeeping), which every step pays. It also holds
per-position temperatures that calibrate the drafter's confidence against logged acceptance
(`fit_temperatures`), so the survival products the schedule multiplies are meaningful.

With `decoding.batch_size` B > 1 the costs are a batch's: one drafter step and one target call
for B rows (SPEC.md "Batched decoding"), and the loop's time per batch step.

Tables are cached per (target, drafter and its options, device, dtype, torch version, host,
K, runtimes, B) as JSON under `<user_dir()>/profiles/` (`$CASCADE_HOME`), with when, where and how they were
measured; `cascade profile POLICY` shows, re-measures (`--remeasure`) and calibrates them
(`--calibrate`). The bench's cost model reads the same tables (`cascade.bench.run`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cascade.schedules.costs import CostTable, monotone

log = logging.getLogger(__name__)

FORMAT = 2  # the JSON layout's version; another one is re-measured, not misread
OVERHEAD_TOKENS = 24  # target-only tokens decoded (three times) to time the loop's per-step overhead
TRIALS = 5
PROFILE_PROMPT = 'import os\nimport sys\n\n\ndef main(argv):\n    """Entry point."""\n    for name in argv:\n'


def identity(engine: Any, max_k: int) -> dict[str, Any]:
    """What a table is valid for: the models, their placement, the software and the machine."""
    import torch

    from cascade.drafter import drafter_model

    p = engine.policy
    dm = drafter_model(engine.drafter) if engine.drafter is not None else None
    return {
        "target": str(getattr(engine.target_model.config, "_name_or_path", p.target.model)),
        "target_parameters": sum(x.numel() for x in engine.target_model.parameters()),
        "drafter": p.drafter.plugin if p.drafter is not None else None,
        "drafter_options": dict(p.drafter.options) if p.drafter is not None else {},
        "drafter_parameters": sum(x.numel() for x in dm.parameters()) if dm is not None else 0,
        "device": str(engine.device),
        "dtype": str(engine.target_model.dtype),
        "torch": torch.__version__,
        "host": platform.node(),
        "max_k": int(max_k),
        "format": FORMAT,
        "runtimes": list(runtimes(engine)),
        "rows": p.decoding.batch_size,
    }


def runtimes(engine: Any) -> tuple[str, str]:
    """How the engine runs its target and its model drafter: lean or transformers (cascade.runtime.lean)."""
    lm = engine.drafter.runtime if engine.drafter is not None else None
    drafter = "lean" if lm is not None and lm.lean is not None else "transformers"
    return ("lean" if engine.target.lean is not None else "transformers", drafter)


def cache_dir() -> Path:
    from cascade.home import user_dir

    return user_dir() / "profiles"


def cache_path(ident: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / f"{digest}.json"


def load(ident: Mapping[str, Any]) -> CostTable | None:
    """The cached table for `ident`, or None (absent, unreadable or of another identity: logged)."""
    path = cache_path(ident)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        table = CostTable(
            float(data["draft_seconds"]),
            tuple(float(v) for v in data["verify_seconds"]),
            tuple(float(t) for t in data.get("temperatures", ())),
            float(data["step_seconds"]),
            data.get("provenance", {}),
        )
        if dict(table.provenance.get("identity", {})) != json.loads(json.dumps(dict(ident), default=str)):
            raise ValueError("identity differs")
        if len(table.verify_seconds) != ident["max_k"] + 1 or table.verify_seconds[0] <= 0:
            raise ValueError("wrong length or zero cost")
        return table
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cost table %s is unusable (%s): measuring again", path, exc)
        return None


def save(table: CostTable, ident: Mapping[str, Any]) -> Path:
    path = cache_path(ident)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(asdict(table), indent=1, default=str))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def measure(engine: Any, max_k: int, trials: int = TRIALS) -> CostTable:
    """Time the engine's drafter step and target calls over 1..max_k+1 tokens (median of `trials`)."""
    from cascade.drafter import drafter_model
    from cascade.runtime.costmodel import step_costs

    dm = drafter_model(engine.drafter) if engine.drafter is not None else None
    ids = engine.encode(PROFILE_PROMPT).tolist()
    rows = engine.policy.decoding.batch_size  # a batch's step: one drafter call and one target call for all rows
    m = step_costs(engine.target_model, dm, ids, max_k, trials=trials, rows=rows, runtimes=runtimes(engine))
    t1 = m["target_step_seconds"]
    verify = monotone([v * t1 for v in m["verify_costs"]])
    per_token = loop_seconds_per_token(engine, rows)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return CostTable(
        float(m["drafter_step_seconds"]),
        verify,
        step_seconds=max(per_token - t1, 0.0),
        provenance={
            "measured_at": when,
            "trials": trials,
            "prompt_tokens": len(ids),
            "raw_verify_seconds": [v * t1 for v in m["verify_costs"]],
            "target_only_seconds_per_token": per_token,
        },
    )


def loop_seconds_per_token(engine: Any, rows: int = 1) -> float:
    """Seconds per step of target-only decoding of `rows` rows at once through the engine's own loop, on the
    engine's loaded target (no second copy), prefill and first token excluded: the median of three decodes.
    Less one bare (batched) target forward, it is what every step pays besides its forwards."""
    from cascade.policy import ScheduleSpec
    from cascade.rules import NoDeferral

    policy = engine.policy.derive(
        engine.policy.name, {"mode": "target", "decoding": {"schedule": ScheduleSpec(), "ignore_eos": True}}
    )
    plain = type(engine)(policy, engine.target_model, engine.tokenizer, None, NoDeferral())  # an Engine
    ids = plain.encode(PROFILE_PROMPT).tolist()
    times = []
    for i in range(4):
        g = plain.generate([ids] * rows, max_new_tokens=OVERHEAD_TOKENS, record_decisions=False, batch_size=rows)[0]
        m = g.metrics
        if i and m.num_generated_tokens > 1:  # the first decode warms up
            times.append((m.decode_seconds - m.ttft_seconds) / (m.num_generated_tokens - 1))
    return statistics.median(times)


def cost_table(engine: Any, max_k: int, *, remeasure: bool = False) -> tuple[CostTable, Path, bool]:
    """The cached table for this engine (measured and cached when absent, or when asked); its path,
    and whether it was measured now. Re-measuring keeps the calibration already fitted."""
    ident = identity(engine, max_k)
    cached = load(ident)
    if cached is not None and not remeasure:
        return cached, cache_path(ident), False
    table = measure(engine, max_k)
    table = CostTable(
        table.draft_seconds,
        table.verify_seconds,
        cached.temperatures if cached is not None else (),
        table.step_seconds,
        {**table.provenance, **_calibration_provenance(cached), "identity": ident},
    )
    return table, save(table, ident), True


def with_temperatures(
    engine: Any, table: CostTable, temperatures: Sequence[float], source: Mapping[str, Any]
) -> tuple[CostTable, Path]:
    """The table with a fitted calibration, saved over the cached one."""
    ident = identity(engine, table.max_k)
    new = CostTable(
        table.draft_seconds,
        table.verify_seconds,
        tuple(temperatures),
        table.step_seconds,
        {**table.provenance, "calibration": dict(source), "identity": ident},
    )
    return new, save(new, ident)


def _calibration_provenance(cached: CostTable | None) -> dict[str, Any]:
    if cached is None or "calibration" not in cached.provenance:
        return {}
    return {"calibration": cached.provenance["calibration"]}
