"""B rows of one causal LM over one padded KV cache with holes (BASS-PAD, SPEC.md "Batched decoding").

`RaggedLM` is the only place the engine and the model drafter touch a model. The
cache is rectangular, (B, H, S, D) per layer, S slots shared by the rows; a boolean
`valid` (B, S) says which slots hold a row's kept tokens. Rows keep their own
lengths and true positions:

- `forward(ids)` appends row b's tokens ids[b] (n_b,) in K = max n_b new slots
  (the shorter rows padded: their pad slots are holes from the start) and returns
  the logits;
- `rollback(lengths)` keeps the first lengths[b] tokens of row b: its later slots
  become holes (masked out of attention, never zeroed: a zero key still gets
  weight e^0), and the tail no row keeps is cropped;
- `select(rows)` lets finished rows leave the batch, `add_rows(n)` lets new ones join it (their
  first `forward` is their prompt, the other rows fed nothing); `compact()` gathers each row's
  kept slots to the right when holes pile up.

Attention gets an additive float mask (0 = attend, the dtype's min = masked;
a boolean 4D mask is silently wrong under eager attention) of shape
(B, 1, K, S + K) and explicit position_ids = each row's true positions. A new slot
always sees itself, so a pad's keys stay finite. While the cache has no hole and
every row has the same length (always at B = 1) the model gets neither, exactly
the plain causal path.

Memory: each layer's keys and values live in buffers allocated once per batch for
`capacity` slots (`SlotLayer`); a crop moves an index, nothing is copied. Models
whose caches are not plain full-attention layers (sliding windows, linear
attention) keep transformers' own cache: they decode one row, and rows that would
need holes are refused.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from cascade.errors import CascadeError
from cascade.runtime.lean import lean_forward
from cascade.runtime.models import max_positions
from cascade.runtime.slots import SlotLayer, compact_slack
from cascade.verify.masks import attention, depths


class RaggedLM:
    """A causal LM decoding B rows at once. `lengths[b]` = tokens of row b in the cache (its next position)."""

    def __init__(self, model, runtime: str = "auto"):
        self.model = model
        # cascade's lean forward over the same weights where it applies (runtime auto or lean), else transformers'
        self.lean = lean_forward(model) if runtime != "transformers" else None
        if runtime == "lean" and self.lean is None:
            raise CascadeError(
                f"runtime 'lean' does not cover {model.config.model_type} models with this "
                "configuration: use runtime auto or transformers"
            )
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.max_positions = max_positions(model.config)
        self.cache: Any = None  # a DynamicCache (ours: `SlotLayer` layers) after reset
        self.lengths: list[int] = [0]
        self.evicted: list[int] = [0]
        self.valid = torch.zeros(1, 0, dtype=torch.bool, device=self.device)  # (B, S)
        self.block_start = 0  # the width before the last forward: where its block's slots start
        self.hidden: torch.Tensor | None = None  # the last forward's hidden states, when asked for
        self.dense = True  # no hole anywhere: every row's tokens fill slots 0..lengths[b]-1
        self.slotted = False  # the cache is ours (`SlotLayer`): holes, compaction and batches work
        self.peak_bytes = 0  # the largest the keys and values have been since reset
        # since this object was built, across batches (what `cascade bench --batch-sizes` reports):
        # real tokens and pad slots fed, slots attended over and those of them that were holes, and
        # the largest keys + values per row
        self.totals = {"fed": 0, "padded": 0, "attended": 0, "holes": 0, "peak_row_bytes": 0}

    # ------------------------------------------------------------------ state

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def width(self) -> int:
        return self.valid.shape[1]

    @property
    def seen(self) -> list[int]:
        """Tokens of each row's sequence the cache has been fed (kept or evicted): where its next token goes."""
        return [n + e for n, e in zip(self.lengths, self.evicted)]

    @property
    def length(self) -> int:
        """Row 0's length: the whole story at B = 1."""
        return self.lengths[0]

    @torch.inference_mode()
    def reset(self, rows: int = 1, capacity: int | None = None) -> None:
        """An empty cache for `rows` rows; keys and values for `capacity` slots are allocated on first use."""
        cache = DynamicCache(config=self.model.config)
        self.slotted = all(type(layer) is DynamicLayer for layer in cache.layers) and len(cache.layers) > 0
        if self.slotted:
            slots = capacity or self.max_positions or 512
            cache.layers = [SlotLayer(slots + compact_slack(slots)) for _ in cache.layers]
        elif hasattr(cache, "activate_past_recording"):  # sliding-window layers roll back only what they recorded
            cache.activate_past_recording()
        if rows > 1 and not self.slotted:
            raise CascadeError(
                f"batched decoding needs full-attention KV caches; {self.model.config.model_type} "
                f"has {type(cache.layers[0]).__name__}: decode it with batch size 1"
            )
        self.cache = cache
        self.lengths = [0] * rows
        self.evicted = [0] * rows  # tokens of row b dropped for good (`evict`): its next position is lengths + evicted
        self.valid = torch.zeros(rows, 0, dtype=torch.bool, device=self.device)
        self.dense, self.peak_bytes = True, 0

    # ------------------------------------------------------------------ forward

    @torch.inference_mode()
    def forward(
        self,
        ids: Sequence[torch.Tensor],
        last_only: bool = False,
        trees: Sequence[list[int] | None] | None = None,
        hidden: bool = False,
    ) -> torch.Tensor:
        """Append ids[b] (n_b,) to row b. Logits float32 (B, K, V), row b's in [:n_b]; with last_only, each
        row's last token only (B, V): the rows are then padded on the left, so that token ends the block.
        trees[b], when given, makes row b's block [root, nodes] a tree (`cascade.verify.tree`): node i = ids[b][i + 1]
        has parent trees[b][i] (-1 = the root), sees only its ancestors and sits at length + its depth.
        With `hidden`, `self.hidden` keeps the last hidden states (B, K, d) of every fed position (else None;
        with last_only, row b's are its last n_b columns)."""
        n = [int(x.shape[0]) for x in ids]
        k = max(n)
        uniform = all(m == k for m in n) and not any(trees or ())
        block = torch.zeros(self.rows, k, dtype=torch.long, device=self.device)  # (B, K) pads: token 0
        real = torch.zeros(self.rows, k, dtype=torch.bool, device=self.device)  # (B, K)
        for b, x in enumerate(ids):
            cols = slice(k - n[b], k) if last_only else slice(0, n[b])
            block[b, cols], real[b, cols] = x, True
        plain = self.dense and uniform and len(set(self.lengths)) == 1 and not any(self.evicted)
        mask = positions = None
        if not plain:
            mask, positions = self._mask(real, trees)  # (B, 1, K, S + K), (B, K)
        self.block_start = self.width
        if self.lean is not None and self.slotted:
            if positions is None:  # every row at the same length: positions length .. length + K - 1
                positions = torch.arange(self.lengths[0], self.lengths[0] + k, device=self.device).expand(self.rows, k)
            # (B, K or 1, d): every position's states when they are asked for, else only what the logits need
            states = self.lean(block, positions, mask, self.cache, 1 if last_only and not hidden else 0)
            raw = (states[:, -1:] if last_only else states) @ self.lean.head.T  # (B, K or 1, V)
        else:
            out = self.model(
                input_ids=block,
                attention_mask=mask,
                position_ids=positions,
                output_hidden_states=hidden,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1 if last_only else 0,
            )
            self.cache, raw = out.past_key_values, out.logits
            states = out.hidden_states[-1] if hidden else None  # after the final norm: what the LM head reads
        self.hidden = states if hidden else None
        attended, kept = self.rows * (self.width + k), sum(self.lengths) + sum(n)
        self.valid = torch.cat([self.valid, real], dim=1)
        self.dense = plain
        self.lengths = [length + m for length, m in zip(self.lengths, n)]
        size = self._buffer_bytes()
        self.peak_bytes = max(self.peak_bytes, size)
        t = self.totals
        t["fed"] += sum(n)
        t["padded"] += self.rows * k - sum(n)
        t["attended"] += attended
        t["holes"] += attended - kept
        t["peak_row_bytes"] = max(t["peak_row_bytes"], size // self.rows)
        logits = raw.float()  # (B, K, V) or (B, 1, V)
        return logits[:, -1] if last_only else logits

    def _mask(
        self, real: torch.Tensor, trees: Sequence[list[int] | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention mask (B, 1, K, S + K) and true positions (B, K) for a block of K new slots."""
        b, k = real.shape
        causal = torch.ones(k, k, dtype=torch.bool, device=self.device).tril()  # (K, K)
        new = causal & real[:, None, :]  # (B, K, K) earlier real tokens of the block
        new |= torch.eye(k, dtype=torch.bool, device=self.device)  # and itself (pads too: their keys stay finite)
        start = torch.tensor([n + e for n, e in zip(self.lengths, self.evicted)], device=self.device)[:, None]  # (B, 1)
        positions = start + (real.long().cumsum(-1) - 1).clamp_min(0)  # (B, K) row b's true positions
        for row, parents in enumerate(trees or ()):
            if parents is not None:  # a tree: ancestors only, at length + depth
                m = len(parents) + 1
                new[row, :m, :m] = attention(parents, self.device)
                positions[row, :m] = start[row] + torch.tensor([0, *depths(parents)], device=self.device)
        allowed = torch.cat([self.valid[:, None, :].expand(b, k, -1), new], dim=-1)  # (B, K, S + K)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        if self.max_positions is not None:
            positions = positions.clamp_max(self.max_positions - 1)  # pads past the end: never attended
        return mask[:, None], positions

    # ------------------------------------------------------------------ roll back, leave, compact

    @torch.inference_mode()
    def rollback(self, lengths: Sequence[int], keep: Sequence[list[int] | None] | None = None) -> None:
        """Row b keeps its first lengths[b] tokens; later slots become holes; the tail no row keeps is cropped.
        keep[b], when given, lists the slots of row b's last block (offsets in it) that stay: a tree's root
        and accepted path; its other slots become holes first."""
        lengths = list(lengths)
        if keep is not None and any(x is not None for x in keep):
            self._need_holes()
            self.valid = self.valid.clone()
            for row, offsets in enumerate(keep):
                if offsets is not None:
                    drop = [self.block_start + j for j in range(self.width - self.block_start) if j not in offsets]
                    self.valid[row, drop] = False
            self.lengths = [int(v) for v in self.valid.sum(-1).tolist()]
            self.dense = False
        if any(new > old for new, old in zip(lengths, self.lengths)):
            raise ValueError(f"cannot roll forward: the rows hold {self.lengths}, asked for {lengths}")
        if self.dense:  # row b's tokens are slots 0..lengths[b]-1: a crop, and holes where rows fall short
            width = max(lengths)
            self.valid = self.valid[:, :width].clone()
            if len(set(lengths)) > 1:
                self._need_holes()
                for b, n in enumerate(lengths):
                    self.valid[b, n:] = False
                self.dense = False
        else:
            rank = self.valid.long().cumsum(-1)  # (B, S) how many kept tokens up to each slot
            self.valid = self.valid & (rank <= torch.tensor(lengths, device=self.device)[:, None])
            used = self.valid.any(0).nonzero()
            width = int(used[-1].item()) + 1 if used.numel() else 0
            self.valid = self.valid[:, :width]
        self.cache.crop(width - self.cache.get_seq_length())
        self.lengths = lengths

    @torch.inference_mode()
    def select(self, rows: Sequence[int]) -> None:
        """Keep only these rows (in this order): the others left the batch."""
        if list(rows) == list(range(self.rows)):
            return
        self._need_holes()
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.valid = self.valid[index]
        self.lengths = [self.lengths[b] for b in rows]
        self.evicted = [self.evicted[b] for b in rows]
        if len(set(self.lengths)) > 1 or not bool(self.valid.all()):
            self.dense = False

    @torch.inference_mode()
    def add_rows(self, n: int) -> None:
        """n empty rows join the batch after the others (requests joining a running batch): no slot is theirs
        yet, so their first `forward` (their prompt, the other rows fed nothing) fills them."""
        if n <= 0:
            return
        self._need_holes()
        for layer in self.cache.layers:
            layer.add_rows(n)
        self.valid = torch.cat([self.valid, self.valid.new_zeros(n, self.width)])
        self.lengths = self.lengths + [0] * n
        self.evicted = self.evicted + [0] * n
        self.dense = self.dense and self.width == 0

    def sibling(self, rows: int, capacity: int) -> RaggedLM:
        """An empty RaggedLM of `rows` rows over the same weights and forward: prefill rows apart, then `absorb`."""
        twin = copy.copy(self)
        twin.reset(rows, capacity)
        return twin

    @torch.inference_mode()
    def absorb(self, other: RaggedLM) -> None:
        """`other`'s rows (prefilled apart on the same weights: `sibling`) join after this batch's own, their keys and
        values copied in right-aligned: a live row gains holes only when the newcomers' cache is the wider."""
        if not (self.slotted and other.slotted) or any(other.evicted):
            raise CascadeError("absorb() takes a cache of ours (SlotLayer) with nothing evicted")
        if not all(layer.is_initialized for layer in self.cache.layers) or other.width == 0:
            self.add_rows(other.rows)  # nothing to copy: the newcomers' first forward fills them
            if other.width:
                raise CascadeError("absorb() needs this batch's cache started (a forward done) to copy rows into")
            return
        width = max(self.width, other.width)
        if width > self.width:
            for layer in self.cache.layers:
                layer.pad_slots(width - self.width)
            self.valid = torch.cat([self.valid, self.valid.new_zeros(self.rows, width - self.width)], dim=1)
        offset = width - other.width
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.append_rows(theirs, offset)
        joined = other.valid.new_zeros(other.rows, width)
        joined[:, offset:] = other.valid
        self.valid = torch.cat([self.valid, joined])
        self.lengths = self.lengths + list(other.lengths)
        self.evicted = self.evicted + [0] * other.rows
        self.dense = False

    @torch.inference_mode()
    def evict(self, sink: int | Sequence[int], window: int) -> None:
        """Keep only each row's first `sink` (or sink[b]) and latest `window` tokens (StreamingLLM's sparse view):
        the others become holes for good, and later tokens keep their true positions (lengths + evicted)."""
        sinks = [sink] * self.rows if isinstance(sink, int) else list(sink)
        drop = [max(0, n - s - window) for n, s in zip(self.lengths, sinks)]
        if not any(drop):
            return
        self._need_holes()
        rank = self.valid.long().cumsum(-1)  # (B, S)
        lo = torch.tensor(sinks, device=self.device)[:, None]
        hi = torch.tensor([n - window for n in self.lengths], device=self.device)[:, None]
        self.valid = self.valid & ~((rank > lo) & (rank <= hi))
        self.lengths = [n - d for n, d in zip(self.lengths, drop)]
        self.evicted = [e + d for e, d in zip(self.evicted, drop)]
        self.dense = False

    @torch.inference_mode()
    def adopt(self, source: RaggedLM, picks: Sequence[Sequence[int]]) -> None:
        """Start from `source`'s cache (the same weights': the target's, after its prefill) instead of a prefill:
        row b keeps the tokens of source row b whose indices in its sequence are picks[b] (sorted), at their
        true positions; the others count as evicted. Rows are right-aligned, holes on the left, as `compact`."""
        if not (self.slotted and source.slotted) or source.rows != self.rows or any(source.evicted):
            raise CascadeError("adopt() takes a full cache of as many rows, both ours (SlotLayer)")
        width = max((len(p) for p in picks), default=0)
        index = torch.zeros(self.rows, width, dtype=torch.long, device=self.device)  # (B, W) source slots
        valid = torch.zeros(self.rows, width, dtype=torch.bool, device=self.device)  # (B, W)
        for b, p in enumerate(picks):
            if len(p):
                slots = source.valid[b].nonzero().squeeze(-1)  # (n_b,) row b's slots in sequence order
                index[b, width - len(p) :] = slots[torch.as_tensor(list(p), device=self.device)]
                valid[b, width - len(p) :] = True
        for mine, theirs in zip(self.cache.layers, source.cache.layers):
            if theirs.is_initialized and width:
                take = index[:, None, :, None]
                mine.update(
                    theirs.keys.gather(2, take.expand(-1, theirs.keys.shape[1], -1, theirs.keys.shape[-1])),
                    theirs.values.gather(2, take.expand(-1, theirs.values.shape[1], -1, theirs.values.shape[-1])),
                )
        self.valid = valid
        self.lengths = [len(p) for p in picks]
        self.evicted = [n - len(p) for n, p in zip(source.lengths, picks)]
        self.dense = bool(valid.all()) and not any(self.evicted)

    @torch.inference_mode()
    def attention_scores(self, ids: Sequence[torch.Tensor], overlap: Sequence[int] | None = None) -> list[torch.Tensor]:
        """SnapKV's importance of each row's cached tokens: the attention that ids[b] (w,), fed after row b as a
        block, give each of them, summed over layers, heads and the block's queries. With overlap[b] = o, the
        block's first o tokens are the row's last o cached ones again, at their true positions, and those cached
        copies are hidden from it: the block's queries are exactly the ones those tokens had (SnapKV's observation
        window), and their scores are 0. The cache is left as it was (the block is rolled back). Row b's scores
        (lengths[b],) in sequence order. Lean runtime only."""
        if self.lean is None or not self.slotted:
            raise CascadeError("attention scores need the lean runtime (runtime auto or lean) on GPT-2, Llama or Qwen2")
        before, valid = list(self.lengths), self.valid
        n = [int(x.shape[0]) for x in ids]
        k = max(n)
        block = torch.zeros(self.rows, k, dtype=torch.long, device=self.device)
        real = torch.zeros(self.rows, k, dtype=torch.bool, device=self.device)
        for b, x in enumerate(ids):
            block[b, k - n[b] :], real[b, k - n[b] :] = x, True
        mask, positions = self._mask(real)
        for b, o in enumerate(overlap or ()):
            if o:
                mask[b, ..., valid[b].nonzero().squeeze(-1)[-o:]] = torch.finfo(mask.dtype).min
                positions[b] -= o
        probe: list[torch.Tensor] = []
        self.lean(block, positions, mask, self.cache, 1, probe=probe)
        mass = torch.stack(probe).sum(0)[:, : valid.shape[1]]  # (B, S) the cached slots' share
        self.cache.crop(valid.shape[1] - self.cache.get_seq_length())
        self.lengths, self.valid = before, valid
        return [mass[b][valid[b]] for b in range(self.rows)]

    def holes(self) -> int:
        """Slots of the cache that hold no row's token (attended over, masked out)."""
        return self.rows * self.width - sum(self.lengths)

    def maybe_compact(self, incoming: int = 0) -> None:
        """Compact when holes leave compact_slack(width) slots of width unused, or the buffers would overflow."""
        if self.dense or not self.slotted:
            return
        capacity = min(layer.capacity for layer in self.cache.layers)
        if self.width - max(self.lengths) >= compact_slack(self.width) or self.width + incoming > capacity:
            self.compact()

    @torch.inference_mode()
    def compact(self) -> None:
        """Gather each row's kept slots to the right end of a cache max(lengths) wide (pads on the left)."""
        self._need_holes()
        width = max(self.lengths)
        # for each row: its kept slots in order, right-aligned; the left pads point at slot 0 and stay holes
        order = torch.sort((~self.valid).long(), dim=-1, stable=True).indices[:, :width]  # (B, W) kept slots first
        shift = torch.tensor([width - n for n in self.lengths], device=self.device)[:, None]  # (B, 1)
        target = torch.arange(width, device=self.device)[None, :] - shift  # (B, W) source column in `order`
        index = torch.where(target >= 0, order.gather(1, target.clamp_min(0)), torch.zeros_like(target))
        for layer in self.cache.layers:
            layer.gather_slots(index)
        self.valid = target >= 0
        self.dense = bool(self.valid.all())

    def _buffer_bytes(self) -> int:
        """cache_bytes(), recomputed only when our buffers were (re)allocated: not on every forward."""
        first = self.cache.layers[0] if self.slotted and self.cache.layers else None
        key = (id(first.kbuf), tuple(first.kbuf.shape)) if first is not None and first.is_initialized else None
        if key is None or key != getattr(self, "_sized", None):
            self._sized, self._size = key, self.cache_bytes()
        return self._size

    def cache_bytes(self) -> int:
        """Bytes the keys and values occupy now (the allocated buffers for our own layers)."""
        total = 0
        for layer in self.cache.layers if self.cache is not None else ():
            if isinstance(layer, SlotLayer) and layer.is_initialized:
                total += layer.kbuf.numel() * layer.kbuf.element_size() + layer.vbuf.numel() * layer.vbuf.element_size()
            elif getattr(layer, "keys", None) is not None:
                total += layer.keys.numel() * layer.keys.element_size() * 2
        return total

    def _need_holes(self) -> None:
        if not self.slotted:
            raise CascadeError(
                f"{self.model.config.model_type}'s cache cannot hold rows of different lengths: "
                "decode it with batch size 1"
            )
