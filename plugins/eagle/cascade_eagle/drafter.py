"""The `eagle` drafter: a head over the target's features drafts a tree, expanded by confidence (EAGLE-2).

State of one row (the engine builds one instance per row of a batch):

    tokens   x_0 .. x_{n-1}              the context (the engine's `context`)
    features f_0 .. f_{n-2}              the target's, for every token but the last emitted one: the
                                         prompt's computed at reset, the rest from each Feedback
    head KV  pairs (f_j, x_{j+1}) at position j, for every feature fed so far (accepted context only)

A draft:
1. catch-up: feed the features not fed yet, in one head pass; its last output g_root gives
   q(x_n), the root's children;
2. expansion, `depth - 1` passes: feed the frontier nodes (a node's input is its parent's output
   and its own token, at position base + its depth; it attends to the accepted context and to its
   ancestors only); each node's top-k children get the value parent value + log q(child), the
   log of the product of confidences along the path; the global top-k become the next frontier;
3. rerank: the `budget` best nodes of everything expanded (ties: earlier first, so a node's
   ancestors always come with it), in creation order (parents before children).

`tree: static` keeps every root child's greedy chain (k chains) instead (both are proposed in one
call, `propose_trees`); `tree: chain` drafts one chain round by round (`step`: the catch-up, then
one head pass per token the engine drew) and is verified as any chain draft.

What a tree carries: under greedy decoding `probs`, q at each node's parent (T = 1), so a cascade
rule can read q; under sampling none (the children are chosen, not drawn): it is verified
losslessly by multi-round sampling (SPEC.md "Tree drafts"). A chain's q is its logits, from which
the engine draws as from any drafter's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cascade import (
    CascadeError,
    DrafterBase,
    DrafterContext,
    DraftRound,
    DraftStep,
    TreeDraft,
    TreeRound,
    resolve_model_path,
    softmax,
)
from cascade_eagle import features as T
from cascade_eagle.head import EagleHead, load_head


class EagleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    head: str = Field(min_length=1, description="the head's folder (relative to the policy's folder)")
    # the chain by default: on the development CPU it beat every tree measured (1.61x against 1.16-1.27x, README
    # "EAGLE draft trees"); on a GPU, where verifying more nodes costs little more, try `tree: dynamic`
    tree: Literal["dynamic", "static", "chain"] = "chain"
    # a tree's defaults: the best dynamic tree measured on the development CPU
    top_k: int = Field(2, ge=1, le=32, description="children per node and frontier width")
    depth: int = Field(4, ge=1, le=32, description="expansion passes: the deepest draft token (dynamic, static)")
    budget: int | None = Field(
        None,
        ge=1,
        le=512,
        description="a tree's nodes verified per step (default and cap: the policy's block "
        "size); a chain's length is the schedule's",
    )
    # the head's arithmetic (its layer and the LM head's matmul): auto = the target's dtype, except on a CPU with
    # hardware bfloat16 (AVX512-BF16: ~5x on the LM head here). Drafts only: verification stays in the target's
    # dtype, so outputs stay exact
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _budget_sizes_trees(self) -> EagleOptions:
        if self.budget is not None and self.tree == "chain":
            raise ValueError("budget sizes trees; a chain's length is the schedule's (decoding.schedule)")
        return self

    @field_validator("head")
    @classmethod
    def _a_head_folder(cls, v: str, info: ValidationInfo) -> str:
        """Resolved against the policy's folder (validation context `base_dir`), then the working directory."""
        base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
        try:
            folder = Path(resolve_model_path(v, base))
        except CascadeError:  # no such folder, and not of a hub id's form: say what an EAGLE head needs
            folder = (Path(base) if base else Path.cwd()) / v
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"no EAGLE head at {v!r} (looked for {folder}/config.json): train one with "
                "`cascade eagle train --target DIR --out DIR`"
            )
        return str(folder)


@functools.lru_cache(maxsize=8)
def _head(folder: str, stamp: float, device: str, dtype: torch.dtype) -> EagleHead:
    """Heads are read-only: rows of a batch share one load (`stamp`: the weights' mtime, so a retrained
    head is read again)."""
    return load_head(Path(folder), device, dtype)


def _stamp(folder: Path) -> float:
    weights = folder / "model.safetensors"
    return weights.stat().st_mtime if weights.exists() else 0.0


def _bf16_is_fast(device: torch.device) -> bool:
    """bfloat16 matmuls run in hardware on this CPU (AVX512-BF16 or AMX): about 5x an fp32 LM head here.
    A fixed property of the machine, so a policy drafts the same tokens from run to run."""
    cpu = getattr(torch, "cpu", None)
    probe = getattr(cpu, "_is_avx512_bf16_supported", None)
    return device.type == "cpu" and probe is not None and bool(probe())


@functools.lru_cache(maxsize=4)
def _cast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The target's LM head in the head's dtype: the weight itself when the dtypes agree, else one cast copy
    shared by every row's drafter."""
    return weight.detach().to(dtype)


@dataclass
class _Tree:
    """The nodes expanded for one draft, in creation order."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # a candidate's parent candidate, -1 = the root
    scores: list[float] = field(default_factory=list)  # log of the product of q along the path
    source: list[int] = field(default_factory=list)  # the row of `dists` the node was chosen from


class EagleDrafter(DrafterBase):
    """One instance per row (the engine builds them): the head's state is one sequence's."""

    name = "eagle"
    deterministic = False
    reads_target_features = True  # the engine sends the target's features of the accepted positions
    Options = EagleOptions

    def __init__(self, options: EagleOptions, ctx: DrafterContext):
        if ctx.target_model is None:
            raise CascadeError(
                "drafter 'eagle' reads the target's features and shares its embedding and LM head, "
                "but this engine gave it no target (DrafterContext.target_model)"
            )
        folder = Path(resolve_model_path(options.head, ctx.base_dir))
        self.opts = options
        self.proposes_trees = options.tree != "chain"
        self.target = ctx.target_model
        d, v = T.hidden_size(self.target), T.vocab_size(self.target)
        if options.dtype != "auto":
            self.dtype = getattr(torch, options.dtype)
        else:
            self.dtype = torch.bfloat16 if _bf16_is_fast(ctx.device) else ctx.dtype
        self.head = _head(str(folder), _stamp(folder), str(ctx.device), self.dtype)
        if (self.head.cfg.hidden, self.head.cfg.vocab) != (d, v):
            raise CascadeError(
                f"EAGLE head {folder} was trained for a target with hidden size {self.head.cfg.hidden} "
                f"and vocabulary {self.head.cfg.vocab} ({self.head.cfg.target or 'unnamed'}); "
                f"{ctx.target_name} has {d} and {v}"
            )
        self.device = ctx.device
        self.model = None  # no HF model of its own (benchmarks' peers need one)
        # the target's embedding table (rows cast as they are read) and LM head, in the head's dtype: shared when
        # the dtypes agree, else one cast copy of the LM head (the drafts' cost is mostly that matmul)
        self.emb_w = self.target.get_input_embeddings().weight
        out = self.target.get_output_embeddings()
        self.lm_w = _cast(out.weight, self.dtype)
        self.lm_b = None if getattr(out, "bias", None) is None else _cast(out.bias, self.dtype)

    # ------------------------------------------------------------------ the contract

    def start(self, prompts) -> None:
        self.past: tuple[torch.Tensor, torch.Tensor] | None = None  # head K/V of the fed pairs (1, H, S, c)
        self.fed = 0  # pairs fed = S
        self.pending: torch.Tensor | None = None  # (m, d) features known but not fed yet; None: none sent yet
        self.known = 0  # features known: f_0 .. f_{known-1}
        self.g: torch.Tensor | None = None  # (1, d) the chain's last head output
        self.chain: tuple[torch.Tensor, torch.Tensor] | None = None  # head K/V of the accepted context + the chain

    def target_features(self, states) -> None:
        """The prompt's features but the last token's, (P - 1, d), from the engine's prefill."""
        (hidden_states,) = states
        self.pending = hidden_states.to(self.dtype, copy=True)  # not a view that keeps the batch's states alive
        self.known = hidden_states.shape[0]

    def step(self, ask: DraftRound) -> DraftStep:
        """A chain, round by round: the catch-up gives the first position; each later round feeds the token the
        engine drew (its parent's output and its own token, at the position after its parent's)."""
        (context,) = ask.contexts
        with torch.inference_mode():
            if ask.drafted == 0:
                self.g, self.chain = self.prepare(context), self.past
            else:
                assert self.g is not None and self.chain is not None
                position = torch.tensor([[self.fed + ask.drafted - 1]], device=self.device)
                g, k, v = self.head.step(self.g[None], self._embed(context[-1:].view(1, 1)), position, self.chain, None)
                self.g = g[:, -1]
                self.chain = (torch.cat([self.chain[0], k], 2), torch.cat([self.chain[1], v], 2))
            return DraftStep(logits=self._logits(self.g))  # (1, V)

    def propose_trees(self, ask: TreeRound) -> list[TreeDraft]:
        (context,), (k,) = ask.contexts, ask.budgets
        with torch.inference_mode():
            g_root = self.prepare(context)
            budget = min(k, self.opts.budget or k)
            if budget < 1:
                return [TreeDraft(context[:0], context[:0], calls=1)]
            return [self._tree(g_root, budget, carry_q=ask.params.greedy)]

    def observe(self, feedbacks) -> None:
        (feedback,) = feedbacks
        self.g = self.chain = None
        if feedback.hidden_states is None or self.pending is None:  # not sent: recomputed at the next draft
            return
        self.pending = torch.cat([self.pending, feedback.hidden_states.to(self.pending.dtype)])
        self.known += feedback.hidden_states.shape[0]

    def prepare(self, context: torch.Tensor) -> torch.Tensor:
        """A new draft: the features of the context known (computed where the engine sent none), fed to the head in
        one catch-up pass; its last output is g_root. The engine asks only where the context has a feature (n >= 2).
        (n,) -> (1, d)"""
        n = context.shape[0]
        if self.pending is None:  # no prefill from the engine (drafter-only mode): the prompt's features, here
            self.pending, self.known = self._features(context[: n - 1]), n - 1
        elif self.known != n - 1:  # features went missing (a step without feedback): recompute them
            self.pending = torch.cat([self.pending, self._features(context[: n - 1])[self.known :]])
            self.known = n - 1
        return self._catch_up(context)

    # ------------------------------------------------------------------ steps

    @torch.inference_mode()
    def _features(self, ids: torch.Tensor) -> torch.Tensor:
        """The target's features of every token of `ids` (one target pass, no cache). (m,) -> (m, d)"""
        if ids.shape[0] == 0:
            return torch.empty(0, self.head.cfg.hidden, device=self.device, dtype=self.dtype)
        return T.target_features(self.target, ids[None])[0].to(self.dtype)

    @torch.inference_mode()
    def _catch_up(self, context: torch.Tensor) -> torch.Tensor:
        """Feed pairs (f_j, x_{j+1}) for j = fed .. known-1 in one pass; the last output is g_root. -> (1, d)"""
        assert self.pending is not None
        j = torch.arange(self.fed, self.known, device=self.device)  # (m,)
        g, k, v = self.head.step(self.pending[None], self._embed(context[j + 1])[None], j[None], self.past, None)
        self.past = (k, v) if self.past is None else (torch.cat([self.past[0], k], 2), torch.cat([self.past[1], v], 2))
        self.fed, self.pending = self.known, self.pending[:0]
        return g[:, -1]

    def _q(self, g: torch.Tensor) -> torch.Tensor:
        """q at T = 1 from head outputs. (m, d) -> (m, V)"""
        return softmax(self._logits(g))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The target's embeddings of `ids`, in the head's dtype. (...,) -> (..., d)"""
        return torch.nn.functional.embedding(ids, self.emb_w).to(self.dtype)

    def _logits(self, g: torch.Tensor) -> torch.Tensor:
        """The target's LM head on head outputs, as float32 logits. (..., d) -> (..., V)"""
        return torch.nn.functional.linear(g, self.lm_w, self.lm_b).float()

    def _tree(self, g_root: torch.Tensor, budget: int, carry_q: bool) -> TreeDraft:
        """EAGLE-2's dynamic tree (or k static chains): expand by value, keep the `budget` best nodes."""
        dynamic = self.opts.tree == "dynamic"
        width = self.opts.top_k
        dists = [self._q(g_root)[0]]  # (V,) q at the root, then at every fed node, in feeding order
        tree = _Tree()
        top = torch.topk(dists[0], width)
        _add(tree, top.indices.tolist(), top.values.log().tolist(), parent=-1, base=0.0, source=0)
        frontier = list(range(len(tree.tokens)))  # candidates fed at the next pass
        fed_keys: list[tuple[torch.Tensor, torch.Tensor]] = []  # tree nodes' K/V, (1, H, 1, c) each
        fed_of: dict[int, int] = {}  # candidate -> its row among fed tree nodes
        ancestors: list[list[int]] = []  # per fed node: the fed rows of itself and its ancestors
        outputs: dict[int, torch.Tensor] = {-1: g_root}
        calls = 1
        for level in range(1, self.opts.depth):
            if not frontier:
                break
            rows = [fed_of.get(tree.parents[c], -1) for c in frontier]
            x = torch.tensor([[tree.tokens[c] for c in frontier]], device=self.device)  # (1, w)
            parent_g = torch.cat([outputs[tree.parents[c]] for c in frontier])[None]  # (1, w, d)
            position = torch.full((1, len(frontier)), self.fed - 1 + level, device=self.device)
            past, bias = self._tree_view(fed_keys, ancestors, rows)
            g, k, v = self.head.step(parent_g, self._embed(x), position, past, bias)
            calls += 1
            q = self._q(g[0])  # (w, V)
            children_k = width if dynamic else 1
            top = torch.topk(q, children_k, dim=-1)
            fresh: list[int] = []
            for i, c in enumerate(frontier):
                at = len(fed_keys)
                fed_of[c] = at
                ancestors.append(([] if rows[i] < 0 else ancestors[rows[i]]) + [at])
                fed_keys.append((k[:, :, i : i + 1], v[:, :, i : i + 1]))
                outputs[c] = g[:, i]
                dists.append(q[i])
                fresh += _add(
                    tree,
                    top.indices[i].tolist(),
                    top.values[i].log().tolist(),
                    parent=c,
                    base=tree.scores[c],
                    source=len(dists) - 1,
                )
            if dynamic:  # the global top-k by value
                frontier = sorted(fresh, key=lambda c: (-tree.scores[c], c))[:width]
            else:
                frontier = fresh
        keep = sorted(sorted(range(len(tree.tokens)), key=lambda c: (-tree.scores[c], c))[:budget])
        index = {c: i for i, c in enumerate(keep)}
        parents = [-1 if tree.parents[c] < 0 else index[tree.parents[c]] for c in keep]
        tokens = torch.tensor([tree.tokens[c] for c in keep], device=self.device)
        # greedy: q at each node's parent, for a cascade rule; sampling: none (the children are chosen, not drawn)
        probs = torch.stack([dists[tree.source[c]] for c in keep]) if carry_q else None  # (k, V)
        return TreeDraft(tokens, torch.tensor(parents, device=self.device), probs, calls)

    def _tree_view(self, fed_keys, ancestors, rows) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor]:
        """The keys a frontier sees (accepted context + every fed tree node) and its bias: the context,
        its own ancestors and itself only. -> past (1, H, S + F, c) x 2, bias (w, S + F + w)"""
        assert self.past is not None
        s, f, w = self.past[0].shape[2], len(fed_keys), len(rows)
        bias = torch.full((w, s + f + w), float("-inf"), device=self.device, dtype=self.past[0].dtype)
        bias[:, :s] = 0
        for i, r in enumerate(rows):
            if r >= 0:
                bias[i, [s + a for a in ancestors[r]]] = 0
            bias[i, s + f + i] = 0
        if not fed_keys:
            return self.past, bias
        keys = torch.cat([self.past[0], *(k for k, _ in fed_keys)], 2)
        values = torch.cat([self.past[1], *(v for _, v in fed_keys)], 2)
        return (keys, values), bias


def _add(tree: _Tree, tokens: list[int], logq: list[float], parent: int, base: float, source: int) -> list[int]:
    start = len(tree.tokens)
    for t, lq in zip(tokens, logq):
        tree.tokens.append(t)
        tree.parents.append(parent)
        tree.scores.append(base + lq)
        tree.source.append(source)
    return list(range(start, len(tree.tokens)))
