"""`cascade rules train`: fit a learned deferral or acceptance head on the decision log.

    cascade rules train --store sqlite:///log.db --policy cascade-token-v3 \\
        --head deferral --features qp --model logistic --label bad --margin 1 --out heads/deferral-lr

Only argparse is imported when the parser is built; scikit-learn loads when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cascade import CascadeError


def add_parser(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser(
        "rules",
        help="learned deferral rules (plugin cascade-learned)",
        description="Learned deferral rules: train a head from the decision log.",
    )
    rsub = rules.add_subparsers(dest="rules_cmd", required=True)
    train = rsub.add_parser(
        "train",
        help="fit a deferral or acceptance head on logged decisions",
        description="Read the drafted positions of logged runs, split them by prompt, fit a scikit-learn model "
        "and write the head (card.json + model.json for logistic, model.skops for hgb) to --out. "
        "Use it with `rule: {name: learned, alpha: A, options: {path: OUT}}`.",
    )
    train.add_argument(
        "--store",
        metavar="URL",
        help="the decision store to read (default: where `cascade run` logs: $CASCADE_STORE or the per-user store)",
    )
    which = train.add_mutually_exclusive_group()
    which.add_argument("--runs", metavar="IDS", help="comma-separated run ids (default: every finished run)")
    which.add_argument("--policy", metavar="NAME", help="the finished runs of this policy name")
    train.add_argument(
        "--head",
        choices=("deferral", "acceptance"),
        default="deferral",
        help="deferral: score drafts to send to the target (default); acceptance: predict "
        "acceptance for a scheduler (drafter-side features only)",
    )
    train.add_argument(
        "--features",
        choices=("q", "qp"),
        default=None,
        help="q: drafter-side features (works in the sequential cascade too); qp: drafter and target "
        "(default: qp for a deferral head, q for an acceptance head)",
    )
    train.add_argument(
        "--model",
        choices=("logistic", "hgb"),
        default="logistic",
        help="logistic regression (stored as JSON, scored as tensors) or histogram gradient "
        "boosting (stored with skops)",
    )
    train.add_argument(
        "--label", default=None, help="deferral: bad (default) or disagree; acceptance: accepted (default) or soft"
    )
    train.add_argument(
        "--margin",
        type=float,
        default=1.0,
        metavar="M",
        help="the `bad` label: log p(argmax p) - log p(x) > M nats (default 1)",
    )
    train.add_argument(
        "--test-size",
        type=float,
        default=0.25,
        metavar="F",
        help="share of prompts held out for the card's metrics (default 0.25)",
    )
    train.add_argument("--seed", type=int, default=0, help="split and model seed (default 0)")
    train.add_argument(
        "--min-rows", type=int, default=200, metavar="N", help="refuse with fewer usable rows than this (default 200)"
    )
    train.add_argument(
        "--exclude",
        metavar="NAMES",
        default="",
        help="comma-separated features to leave out, e.g. recent_acceptance (it depends on the "
        "logging policy's own decisions)",
    )
    train.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the head to")
    train.add_argument("--json", action="store_true", help="print the card as JSON")
    train.set_defaults(func=cmd_train)


def _ids(text: str) -> list[int]:
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CascadeError(f"--runs takes comma-separated run ids, e.g. 3,4; got {text!r}") from None
    if not ids:
        raise CascadeError(f"--runs: no run id in {text!r}")
    return ids


def cmd_train(args) -> int:
    from cascade.store import Store
    from cascade.store.queries.training import training_rows
    from cascade_learned.train import TrainConfig, train

    features = args.features or ("qp" if args.head == "deferral" else "q")
    label = args.label or ("bad" if args.head == "deferral" else "accepted")
    if not 0 < args.test_size < 1:
        raise CascadeError(f"--test-size must be between 0 and 1, got {args.test_size}")
    exclude = tuple(v.strip() for v in args.exclude.split(",") if v.strip())
    cfg = TrainConfig(
        args.head, features, args.model, label, args.margin, args.test_size, args.seed, args.min_rows, exclude
    )
    from cascade.store import mask_url, resolve_url

    url = resolve_url(args.store)
    assert url is not None  # no policy and no --no-store: a store is always named
    if not args.json:
        print(f"reading the decision store {mask_url(url)}", flush=True)
    with Store.open(url, create=False) as store:
        rows = training_rows(store, run_ids=_ids(args.runs) if args.runs else None, policy=args.policy)
    card = train(rows, cfg, args.out)
    if args.json:
        print(json.dumps(card, indent=2))
    else:
        h = card["heldout"]
        print(
            f"{args.out}: {card['head']} head, {card['model']}, {len(card['features'])} features, label "
            f"{card['label']['name']}; held-out ROC-AUC {h['roc_auc']}, PR-AUC {h['pr_auc']}"
        )
    return 0
