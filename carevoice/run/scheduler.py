"""Cross-file batching: speech chunks from many files -> length buckets -> full batches.

Each chunk has an encoder window (policy.window_frames: the shortest bucket that holds it),
and a batch only ever holds chunks of one window length. So a chunk's
encoder input is the same whichever files happen to share its batch: results do not depend
on batch composition, and a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class BatchScheduler(Generic[T]):
    """Collects chunks per window length and hands out batches.

    Args:
        batch_size: Chunks per batch.
        max_pending: When more chunks than this wait (files hold memory and outputs wait),
            the bucket holding the oldest chunk is flushed even if not full.
    """

    batch_size: int
    max_pending: int = 0
    _buckets: dict[int, list[tuple[int, T]]] = field(default_factory=dict)
    _arrivals: int = 0

    def __post_init__(self) -> None:
        if self.max_pending <= 0:
            self.max_pending = self.batch_size * 4

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def add(self, frames: int, chunk: T) -> None:
        self._buckets.setdefault(frames, []).append((self._arrivals, chunk))
        self._arrivals += 1

    def _take(self, frames: int) -> list[T]:
        bucket = self._buckets[frames]
        batch, self._buckets[frames] = bucket[: self.batch_size], bucket[self.batch_size :]
        if not self._buckets[frames]:
            del self._buckets[frames]
        return [chunk for _, chunk in batch]

    def ready(self) -> Iterator[list[T]]:
        """Batches that should run now: full buckets, then the oldest bucket while too much waits."""
        while True:
            full = [frames for frames, bucket in self._buckets.items() if len(bucket) >= self.batch_size]
            if full:
                yield self._take(min(full))
            elif self.pending > self.max_pending:
                oldest = min(self._buckets, key=lambda f: self._buckets[f][0][0])
                yield self._take(oldest)
            else:
                return

    def flush(self) -> Iterator[list[T]]:
        """Every remaining chunk, as batches (end of input)."""
        while self._buckets:
            oldest = min(self._buckets, key=lambda f: self._buckets[f][0][0])
            yield self._take(oldest)
