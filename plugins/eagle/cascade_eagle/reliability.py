"""How well the head's confidence predicts acceptance (`cascade eagle reliability POLICY`).

EAGLE-2 expands trees by confidence because its head is well calibrated: q(x) at a node should be
the chance the target accepts x there, and the product of q along a path the chance the whole path
is accepted. This decodes held-out prompts with an eagle policy (greedy, so every tree carries q)
and records, for every drafted node:

- node: q(x) at its parent, and whether it was accepted, over the nodes whose parent was reached
  (the root, or a node on the accepted path): the per-node calibration;
- path: the product of q from the root to it, and whether it lies on the accepted path.

It writes the reliability table (10 equal-width bins: mean predicted, accepted share, count) as
JSON and a plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cascade import CascadeError

BINS = 10


def record(engine: Any, prompts: list[str], max_new_tokens: int | None) -> dict[str, list[tuple[float, bool]]]:
    """(predicted, accepted) pairs per kind, from decoding `prompts` with an eagle engine."""
    drafter = engine.drafter
    if not drafter.proposes_trees:
        raise CascadeError("reliability reads the q a tree carries: give a policy with tree: dynamic or static")
    pairs: dict[str, list[tuple[float, bool]]] = {"node": [], "path": []}
    last: dict[str, Any] = {}
    propose, observe = drafter.propose_trees, drafter.observe

    def spy_propose(ask):
        last["draft"] = trees = propose(ask)
        return trees

    def spy_observe(feedbacks):
        (d,) = last.pop("draft", [None])  # a row that was not drafted for (its first step) is told nothing to score
        if d is not None and d.tokens.shape[0] > 0 and d.probs is not None:
            _score(d, feedbacks[0], pairs)
        observe(feedbacks)

    drafter.propose_trees, drafter.observe = spy_propose, spy_observe
    try:
        for prompt in prompts:
            engine.generate(prompt, max_new_tokens=max_new_tokens, record_decisions=False)
    finally:
        drafter.propose_trees, drafter.observe = propose, observe
    return pairs


def _score(draft: Any, feedback: Any, pairs: dict[str, list[tuple[float, bool]]]) -> None:
    tokens = draft.tokens.tolist()
    conf = draft.probs.gather(1, draft.tokens[:, None].to(draft.probs.device))[:, 0].tolist()  # q(x) at the parent
    parents = draft.parents.tolist() if draft.parents is not None else list(range(-1, len(tokens) - 1))
    path = set(feedback.path) if feedback.path is not None else set(range(feedback.n_accepted))
    value: list[float] = []
    for i, p in enumerate(parents):
        value.append(conf[i] * (1.0 if p < 0 else value[p]))
        if p < 0 or p in path:  # its parent was reached
            pairs["node"].append((conf[i], i in path))
        pairs["path"].append((value[i], i in path))


def table(pairs: list[tuple[float, bool]]) -> list[dict[str, Any]]:
    """Equal-width bins of the prediction: mean predicted, accepted share, count (empty bins left out)."""
    if not pairs:
        return []
    t = torch.tensor([[p, float(a)] for p, a in pairs])
    b = (t[:, 0] * BINS).long().clamp(max=BINS - 1)
    rows = []
    for i in range(BINS):
        sel = t[b == i]
        if sel.shape[0]:
            rows.append(
                {
                    "bin": f"{i / BINS:.1f}-{(i + 1) / BINS:.1f}",
                    "predicted": round(float(sel[:, 0].mean()), 4),
                    "accepted": round(float(sel[:, 1].mean()), 4),
                    "count": int(sel.shape[0]),
                }
            )
    return rows


def expected_calibration_error(rows: list[dict[str, Any]]) -> float:
    n = sum(r["count"] for r in rows)
    return round(sum(r["count"] * abs(r["predicted"] - r["accepted"]) for r in rows) / max(n, 1), 4)


def report(pairs: dict[str, list[tuple[float, bool]]], out: Path, title: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    result = {
        kind: {"bins": table(p), "ece": expected_calibration_error(table(p)), "n": len(p)} for kind, p in pairs.items()
    }
    (out / "reliability.json").write_text(json.dumps({"title": title, **result}, indent=2) + "\n")
    _plot(result, out / "reliability.png", title)
    return result


def _plot(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    for kind, label in (("node", "q(x) at the node"), ("path", "product of q along the path")):
        rows = result[kind]["bins"]
        ax.plot(
            [r["predicted"] for r in rows],
            [r["accepted"] for r in rows],
            marker="o",
            label=f"{label} (ECE {result[kind]['ece']:.3f}, n={result[kind]['n']})",
        )
    ax.set_xlabel("head's confidence (bin mean)")
    ax.set_ylabel("accepted by the target (share)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
