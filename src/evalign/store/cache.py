"""Cache-through for unit work: look every key up once, compute only what is missing, commit
each finished chunk, so a killed stage loses at most one chunk and a rerun computes nothing.

Each item (a conversation, a prompt's responses, a judge prompt) has one key per value it
yields (one per seed, per response ...); an item is computed when any of its keys is missing.
Without a store (``store=None``) every item is computed and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import sqlite3

    from evalign.store import RunStore

T = TypeVar("T")

_MISSING: Any = object()


class CacheThrough(Generic[T]):
    """The values of ``keys[i][j]``: cached ones read through ``from_row``, the rest filled
    by the caller chunk by chunk with :meth:`fill` (which commits them)."""

    def __init__(self, store: RunStore | None, table: str, keys: Sequence[Sequence[str]],
                 from_row: Callable[[sqlite3.Row], T], *, calls: bool = True) -> None:
        self.store, self.table, self.calls = store, table, calls
        self.keys = [list(row) for row in keys]
        hits = store.cached(table, [k for row in self.keys for k in row]) if store is not None else {}
        self._values: list[list[T]] = [[from_row(hits[k]) if k in hits else _MISSING for k in row]
                                       for row in self.keys]
        #: Items with at least one missing value, in input order.
        self.missing = [i for i, row in enumerate(self._values) if any(v is _MISSING for v in row)]
        #: Values computed by :meth:`fill` so far.
        self.new = 0

    def chunks(self, size: int | None, order: Callable[[int], Any] | None = None) -> Iterator[list[int]]:
        """The missing items in chunks of ``size`` (all in one when None), sorted by ``order``."""
        todo = sorted(self.missing, key=order) if order is not None else list(self.missing)
        step = size or max(1, len(todo))
        for start in range(0, len(todo), step):
            yield todo[start : start + step]

    def fill(self, items: Sequence[int], computed: Sequence[Sequence[T]],
             to_row: Callable[[int, int, T], dict[str, Any]]) -> None:
        """Take ``computed[n][j]`` for the missing values of item ``items[n]`` and commit their
        rows in one transaction (``to_row(i, j, value)``; the key is added here)."""
        rows = []
        for i, values in zip(items, computed):
            for j, value in enumerate(values):
                if self._values[i][j] is _MISSING:
                    self._values[i][j] = value
                    self.new += 1
                    if self.store is not None:
                        rows.append({**to_row(i, j, value), "key": self.keys[i][j]})
        if self.store is not None:
            self.store.put(self.table, rows, calls=self.calls)

    @property
    def values(self) -> list[list[T]]:
        """Every value, once every missing item has been filled."""
        assert not any(v is _MISSING for row in self._values for v in row), "unfilled cache items"
        return self._values


def cache_through(store: RunStore | None, table: str, keys: Sequence[Sequence[str]],
                  compute: Callable[[list[int]], Sequence[Sequence[T]]],
                  to_row: Callable[[int, int, T], dict[str, Any]], from_row: Callable[[sqlite3.Row], T],
                  *, chunk: int | None = 16, order: Callable[[int], Any] | None = None,
                  advance: Callable[[int], None] | None = None,
                  calls: bool = True) -> tuple[list[list[T]], int]:
    """(values of every key, how many were computed now): ``compute(item indices)`` returns the
    values of those items; each chunk is committed before the next is computed. ``calls``: each
    new row is a model call of the open stage (False for values derived from calls stored
    elsewhere)."""
    look = CacheThrough(store, table, keys, from_row, calls=calls)
    for items in look.chunks(chunk, order):
        look.fill(items, compute(items), to_row)
        if advance is not None:
            advance(len(items))
    return look.values, look.new
