"""The KV cache layer of a ragged batch (`cascade.runtime.ragged`): keys and values in buffers allocated once.

A `SlotLayer` is a full-attention transformers cache layer whose keys and values are views of
(B, H, capacity, D) buffers: appending writes in place, a crop moves an index, rows leaving move up in
place, and compaction gathers each row's kept slots. `compact_slack` says how many unused slots a
cache tolerates before compacting.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

COMPACT_SLACK = 32  # compact once a batch's widest row would leave this many hole slots unused (short caches)


def compact_slack(width: int) -> int:
    """Unused slots tolerated before compacting: COMPACT_SLACK, or width/16 on long caches. A compaction copies
    the whole cache (~ one step's attention reads); the unused slots cost their share of every step's attention,
    ≤ 1/16 here. The cache reserves this much beyond its capacity, so it never has to compact every step."""
    return max(COMPACT_SLACK, width // 16)


class SlotLayer(DynamicLayer):
    """A full-attention cache layer whose keys/values are views of buffers allocated once."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.width = 0  # slots in use

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, _, d = key_states.shape
        self.kbuf = key_states.new_empty(b, h, self.capacity, d)  # (B, H, capacity, D)
        self.vbuf = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.width = 0

    def _views(self) -> None:
        self.keys = self.kbuf[:, :, : self.width]  # (B, H, S, D) no copy
        self.values = self.vbuf[:, :, : self.width]

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self._room(self.width + n)  # grows only when the engine under-estimated
        self.kbuf[:, :, self.width : self.width + n] = key_states
        self.vbuf[:, :, self.width : self.width + n] = value_states
        self.width += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.width if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes the number of positions to remove, as a negative integer")
        if self.is_initialized and tokens_to_remove:
            self.width = max(0, self.width + tokens_to_remove)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        keep = indices.tolist()
        if keep == sorted(set(keep)):  # rows leaving: the later rows move up in place (no new buffer), used slots only
            for row, src in enumerate(keep):
                if row != src:
                    self.kbuf[row, :, : self.width] = self.kbuf[src, :, : self.width]
                    self.vbuf[row, :, : self.width] = self.vbuf[src, :, : self.width]
            self.kbuf, self.vbuf = self.kbuf[: len(keep)], self.vbuf[: len(keep)]
        else:
            self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
        self._views()

    def _room(self, width: int) -> None:
        if width > self.capacity:  # grow once, by doubling
            self.capacity = max(2 * self.capacity, width)
            grow = (0, 0, 0, self.capacity - self.kbuf.shape[2])
            self.kbuf = torch.nn.functional.pad(self.kbuf, grow)
            self.vbuf = torch.nn.functional.pad(self.vbuf, grow)

    def pad_slots(self, n: int) -> None:
        """n slots more at the end of every row, zeros (finite keys: masked out, they never turn scores NaN)."""
        if not self.is_initialized or n <= 0:
            return
        self._room(self.width + n)
        self.kbuf[:, :, self.width : self.width + n] = 0
        self.vbuf[:, :, self.width : self.width + n] = 0
        self.width += n
        self._views()

    def append_rows(self, other: SlotLayer, offset: int) -> None:
        """`other`'s rows join after these: their used slots copied to [offset, offset + other.width), zeros around."""
        b = other.kbuf.shape[0]
        self._room(offset + other.width)
        keys = self.kbuf.new_zeros(b, *self.kbuf.shape[1:])
        values = self.vbuf.new_zeros(b, *self.vbuf.shape[1:])
        keys[:, :, offset : offset + other.width] = other.keys
        values[:, :, offset : offset + other.width] = other.values
        self.kbuf, self.vbuf = torch.cat([self.kbuf, keys]), torch.cat([self.vbuf, values])
        self._views()

    def add_rows(self, n: int) -> None:
        """n rows join at the end of the batch, holding nothing yet (their slots are masked out until fed)."""
        if not self.is_initialized:
            return
        self.kbuf = torch.cat([self.kbuf, self.kbuf.new_zeros(n, *self.kbuf.shape[1:])])
        self.vbuf = torch.cat([self.vbuf, self.vbuf.new_zeros(n, *self.vbuf.shape[1:])])
        self._views()

    def gather_slots(self, index: torch.Tensor) -> None:
        """Row b's slots become its old slots index[b] (B, W): compaction."""
        if not self.is_initialized:
            return
        w = index.shape[1]
        for buf, cur in ((self.kbuf, self.keys), (self.vbuf, self.values)):
            moved = cur.gather(2, index[:, None, :, None].expand(-1, cur.shape[1], -1, cur.shape[-1]))
            buf[:, :, :w] = moved
        self.width = w
        self._views()

    def reset(self) -> None:
        super().reset()
        self.width = 0
