"""Log-bucketed histograms that merge across load-generator processes (1% resolution)."""

from __future__ import annotations

import math
from collections import Counter

_STEP = math.log(1.01)


class Histogram:
    """Counts of positive values (microseconds here) in buckets 1% wide."""

    def __init__(self, buckets: dict[int, int] | None = None) -> None:
        self.buckets: Counter[int] = Counter(buckets or {})

    def add(self, value: float) -> None:
        self.buckets[int(math.log(max(value, 1.0)) / _STEP)] += 1

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def percentile(self, p: float) -> float | None:
        """The value below which `p` percent of the samples fall (bucket midpoint)."""
        total = self.count
        if total == 0:
            return None
        rank = math.ceil(total * p / 100)
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return math.exp((bucket + 0.5) * _STEP)
        raise AssertionError("unreachable")

    def to_json(self) -> dict[str, int]:
        return {str(k): v for k, v in self.buckets.items()}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Histogram:
        return cls({int(k): v for k, v in data.items()})
