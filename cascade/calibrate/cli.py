"""`cascade calibrate` on the command line, and what it leaves behind: the calibrated policy YAML, the store's
record, the summary.

The policy is the input policy derived with the α found (`Policy.derive`), named
`<name>-share<S>` or `<name>-quality<Q>`, its description saying how it was calibrated.
Relative file references (the target's and drafter's model folders, a learned rule's head
folder) that resolve from the input policy's folder are rewritten relative to the output's
folder, so the written file loads from where it is; the command loads it back before saying
it wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.errors import CascadeError

if TYPE_CHECKING:
    from cascade.calibrate.search import Calibration
    from cascade.policy import Policy

# the command line's defaults, also those of `cascade.calibrate.calibrate` (a test checks they agree); kept
# here so that building the parser imports nothing heavy
DEFAULT_TOLERANCE = 0.02
DEFAULT_MAX_REPLAYS = 8


def add_parser(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="find a policy's α for a target share of target-decided tokens (or a quality floor)",
        description="Replay the prompts with real decoding, bisecting α (first guess: the quantile of the rule's "
        "logged scores) until the share of target-decided tokens (1 - kept drafts / emitted tokens) "
        "is within --tolerance of --target-share, or the quality relative to target-only stays above "
        "--quality-floor. Every replay is logged as a run; writes the derived policy YAML and a "
        "record in the store's calibrations table.",
    )
    cal.add_argument("policy", type=Path, help="YAML policy file (speculative or sequential, with a deferral rule)")
    cal.add_argument("--prompts", type=Path, required=True, help="JSONL prompts (with references for --quality-floor)")
    goal = cal.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--target-share", type=float, metavar="S", help="wanted share of target-decided tokens, in (0, 1]"
    )
    goal.add_argument(
        "--quality-floor",
        type=float,
        metavar="Q",
        help="keep first-line edit similarity (and the parse rate) >= Q x target-only's, e.g. 0.99",
    )
    cal.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        metavar="T",
        help=f"absolute tolerance on the share (default {DEFAULT_TOLERANCE})",
    )
    cal.add_argument(
        "--max-replays",
        type=int,
        default=DEFAULT_MAX_REPLAYS,
        metavar="N",
        help=f"replays at most, the first one included (default {DEFAULT_MAX_REPLAYS})",
    )
    cal.add_argument("--limit", type=int, metavar="N", help="the first N prompts only")
    cal.add_argument("--max-new-tokens", type=int, metavar="N", help="override decoding.max_new_tokens")
    cal.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where the calibrated policy goes (default: <policy name>-calibrated.yaml here)",
    )
    cal.add_argument(
        "--store",
        metavar="URL",
        help="log the replays and the record here (default: $CASCADE_STORE, the policy's store.url, "
        "else cascade.db in the user's folder)",
    )
    cal.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    cal.add_argument("--json", action="store_true", help="print the result as JSON")
    cal.set_defaults(func=cmd_calibrate)


def _relocate(value: Any, src: Path | None, dst: Path) -> Any:
    """A string naming a file or folder relative to `src` (that exists), re-expressed relative to `dst`."""
    if not isinstance(value, str) or src is None or not value or Path(value).is_absolute():
        return value
    candidate = src / value
    if not candidate.exists():
        return value
    return os.path.relpath(candidate.resolve(), dst.resolve())


def policy_data(policy: Policy, result: Calibration, out: Path, prompts_file: str, n_prompts: int) -> dict[str, Any]:
    goal = f"share{result.goal:g}" if result.objective == "target_share" else f"quality{result.goal:g}"
    what = "target-decided share" if result.objective == "target_share" else "quality relative to target-only"
    measured = "-" if result.measured is None else f"{result.measured:.3f}"
    desc = (
        f"{policy.name} calibrated by `cascade calibrate`: {what} {result.goal:g} (± {result.tolerance:g}) on "
        f"{n_prompts} prompts of {prompts_file}; measured {measured} at α = {result.alpha:.6g} after "
        f"{len(result.replays)} replays{'' if result.converged else ' (not converged: ' + result.note + ')'}"
    )
    derived = policy.derive(
        f"{policy.name}-{goal}", {"rule": {"alpha": float(result.alpha)}, "description": desc}, drop=()
    )
    data = derived.model_dump(mode="json", exclude_none=True)
    folder = out.parent
    data["target"]["model"] = _relocate(data["target"]["model"], policy.base_dir, folder)
    for section in ("drafter", "rule"):
        if isinstance(data.get(section), dict):
            opts = data[section].get("options") or {}
            data[section]["options"] = {k: _relocate(v, policy.base_dir, folder) for k, v in opts.items()}
    return data


def write_policy(data: dict[str, Any], out: Path, registry: Any = None) -> Policy:
    """Write the YAML and load it back (schema and installed plugins): a file that would not load is an error."""
    import yaml

    from cascade.plugins import registry as default_registry
    from cascade.policy import check_policy, load_policy

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    loaded = load_policy(out)
    check_policy(loaded, registry or default_registry())
    return loaded


def record(
    store: Any, policy: Policy, written: Policy, result: Calibration, prompts: list[dict], rule: Any, prompts_file: str
) -> int:
    from cascade.calibrate.search import prompts_sha256
    from cascade.store.writer import CalibrationRecord

    made_of = rule.provenance()  # e.g. a learned head's folder and sha256
    model, model_sha = made_of.get("model"), made_of.get("model_sha256")
    info = {
        "prompts": prompts_file,
        "replays": [r.as_dict() for r in result.replays],
        "note": result.note,
        "baseline": result.baseline.as_dict() if result.baseline else None,
        "source_policy": policy.name,
        "share_definition": "1 - kept drafts / emitted tokens (cascade.calibrate.scores)",
    }
    rec = CalibrationRecord(
        policy_name=written.name,
        policy_yaml=written.source_text or "",
        rule=policy.rule.name,
        target=policy.target.model,
        objective=result.objective,
        goal=result.goal,
        tolerance=result.tolerance,
        alpha=float(result.alpha),
        measured=result.measured,
        converged=result.converged,
        replays=len(result.replays) + (1 if result.baseline else 0),
        prompts_sha256=prompts_sha256(prompts),
        num_prompts=len(prompts),
        drafter=policy.drafter.plugin if policy.drafter else None,
        model=model,
        model_sha256=model_sha,
        run_ids=tuple(result.run_ids),
        info=info,
    )
    return int(store.add_calibration(rec))


def cmd_calibrate(args) -> int:
    import torch

    from cascade.calibrate.search import calibrate
    from cascade.policy import load_policy
    from cascade.prompts import read_prompts
    from cascade.store import Store, resolve_url

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.policy)
    prompts = read_prompts(args.prompts, args.limit)
    url = resolve_url(args.store, no_store=False, policy=policy)
    if not url:
        raise CascadeError("calibrate logs every replay as a run: name a store with --store URL")
    out = args.out or Path(f"{policy.name}-calibrated.yaml")
    with Store.open(url) as store:
        result = calibrate(
            policy,
            prompts,
            store,
            target_share=args.target_share,
            quality_floor=args.quality_floor,
            tolerance=args.tolerance,
            max_replays=args.max_replays,
            max_new_tokens=args.max_new_tokens,
        )
        written = write_policy(policy_data(policy, result, out, str(args.prompts), len(prompts)), out)
        rule = result.replays[0].rule if result.replays else None
        rec_id = record(store, policy, written, result, prompts, rule, str(args.prompts))
        store_url = store.url
    summary = {
        "policy": str(out),
        "name": written.name,
        "objective": result.objective,
        "goal": result.goal,
        "alpha": result.alpha,
        "measured": result.measured,
        "converged": result.converged,
        "replays": len(result.replays) + (1 if result.baseline else 0),
        "run_ids": result.run_ids,
        "calibration_id": rec_id,
        "store": store_url,
        "note": result.note,
        "points": [r.as_dict() for r in result.replays],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        state = "converged" if result.converged else f"NOT converged ({result.note})"
        measured = "-" if result.measured is None else f"{result.measured:.3f}"
        print(
            f"α = {result.alpha:.6g}: {result.objective.replace('_', ' ')} {measured} (asked {result.goal:g} "
            f"± {result.tolerance:g}), {state}, {summary['replays']} replays (runs "
            f"{', '.join(map(str, result.run_ids))}); wrote {out}; calibration {rec_id} in {store_url}"
        )
    if not result.converged:
        print(f"warning: {result.note}", file=sys.stderr)
        return 1
    return 0
