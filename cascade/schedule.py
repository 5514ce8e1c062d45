"""Block-size schedules: how many tokens to draft before the next verification."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BlockSchedule:
    """`constant`: always `size`. `heuristic`: +2 after a fully accepted block, −1 otherwise,
    within [min_size, max_size]. `confidence`: ask for up to `size`; the drafter stops early
    when its top probability falls below `threshold`."""

    kind: str = "constant"
    size: int = 4
    min_size: int = 1
    max_size: int = 16
    threshold: float = 0.0

    def __post_init__(self):
        self.current = self.size

    def reset(self) -> None:
        self.current = self.size

    @property
    def min_confidence(self) -> float:
        return self.threshold if self.kind == "confidence" else 0.0

    def next(self) -> int:
        return self.current

    def update(self, asked: int, accepted: int) -> None:
        if self.kind != "heuristic":
            return
        if asked > 0 and accepted == asked:
            self.current = min(self.max_size, self.current + 2)
        else:
            self.current = max(self.min_size, self.current - 1)
