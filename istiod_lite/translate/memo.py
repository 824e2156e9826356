"""Memo tables for incremental translation: reuse a resource when its inputs did not change.

Used by translator.py only. A translation round reads the previous round's tables and writes
new ones holding exactly the entries it used, so removed objects drop out and the memo never
outgrows one model. Each entry is `key -> (fingerprint, value)`; a lookup reuses `value` iff
the stored fingerprint equals the new one (`is`, then `==`), else it computes it afresh.

Invariant (what makes a hit correct): a fingerprint holds *every* input the computation reads
besides the MeshConfig (a different MeshConfig discards the whole memo). Model objects are
frozen dataclasses compared by value, and unchanged objects keep their identity across
snapshots (`ClusterModel.with_object` returns the old object's snapshot when equal), so most
comparisons stop at `is`. Per-namespace inputs shared by many resources (the Services or
policies in scope of a namespace) are "tokens": `canon()` swaps an equal new token for the
previous object so the per-resource fingerprints compare by identity.
Values (messages) handed out must never be mutated by anyone: the next round may return them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from istiod_lite.translate.mesh import MeshConfig

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Memo:
    """The tables of one finished translation (opaque to callers)."""

    mesh: MeshConfig
    tables: dict[str, dict[Hashable, tuple[Any, Any]]]


@dataclasses.dataclass(frozen=True, slots=True)
class MemoStats:
    """Reused (hits) and recomputed (misses) entries per table in one translation."""

    hits: dict[str, int]
    misses: dict[str, int]

    @property
    def total_misses(self) -> int:
        return sum(self.misses.values())


class Table:
    """One kind of memoized result within one round."""

    __slots__ = ("hits", "misses", "next", "prev")

    def __init__(self, prev: dict[Hashable, tuple[Any, Any]]) -> None:
        self.prev = prev
        self.next: dict[Hashable, tuple[Any, Any]] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, key: Hashable, fingerprint: Any, compute: Callable[[], T]) -> T:
        """The previous value for `key` if its fingerprint equals `fingerprint`, else
        `compute()`; either way it is remembered for the next round."""
        hit = self.prev.get(key)
        if hit is not None and (hit[0] is fingerprint or hit[0] == fingerprint):
            self.hits += 1
            value: T = hit[1]
        else:
            self.misses += 1
            value = compute()
        self.next[key] = (fingerprint, value)
        return value

    def canon(self, key: Hashable, token: T) -> T:
        """`token`, or the previous round's equal token object (so later `is` checks hit)."""
        hit = self.prev.get(key)
        if hit is not None and (hit[0] is token or hit[0] == token):
            token = hit[0]
        self.next[key] = (token, None)
        return token


class MemoRound:
    """The memo view of one translation: previous tables in, next `Memo` out."""

    def __init__(self, previous: Memo | None, mesh: MeshConfig) -> None:
        self._mesh = mesh
        self._prev = previous.tables if previous is not None and previous.mesh == mesh else {}
        self._tables: dict[str, Table] = {}

    def table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = Table(self._prev.get(name, {}))
        return table

    def finish(self) -> tuple[Memo, MemoStats]:
        tables = {name: t.next for name, t in self._tables.items()}
        stats = MemoStats({n: t.hits for n, t in self._tables.items()},
                          {n: t.misses for n, t in self._tables.items()})
        return Memo(self._mesh, tables), stats
