"""Finding duplicate pairs with the collection's vector index, and grouping them into clusters.

Each queried subject's templates search the index (approximate candidates where the collection
has an approximate index, every candidate re-scored exactly) for the best ``k`` other subjects
allowed for the purpose; every hit at or above the threshold is a pair (a subject's best
template pair decides its score). A query whose ``k`` hits all pass the threshold may have more:
it is searched again with a larger ``k`` until one hit falls below or ``MAX_K`` is reached.
Pairs found from both sides are kept once. Clusters are the connected components of the pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..components import component_of
from ..gallery.ports import Hit

DEFAULT_K = 8
MAX_K = 512
BATCH_TEMPLATES = 4096

PairKey = tuple[int, int]  # (lower, higher) internal subject id


class PairSearch(Protocol):
    """What de-duplication needs from a collection's vector index."""

    def search_many(self, queries: np.ndarray, k: int, purpose: str | None, now: float, *,
                    exclude_subjects: Sequence[int | None] | None = None) -> list[list[Hit]]:
        """Best ``k`` subjects per query row whose consent covers ``purpose`` at ``now``, leaving
        out row i's ``exclude_subjects[i]``; exact cosine scores, best first."""
        ...


@dataclass(frozen=True)
class Query:
    subject_id: int
    vectors: np.ndarray  # (templates, dim)


def find_pairs(search: PairSearch, queries: Iterable[Query], *, purpose: str, now: float, threshold: float,
               k: int = DEFAULT_K, batch: int = BATCH_TEMPLATES, on_batch: Callable[[int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> dict[PairKey, float]:
    """Every pair (queried subject, other allowed subject) scoring at or above ``threshold``,
    with its best score. ``on_batch(n)``: n more subjects searched. ``cancelled()``: checked
    between batches; true stops the search (the pairs so far are returned)."""
    pairs: dict[PairKey, float] = {}
    pending: list[Query] = []
    rows = 0
    for q in queries:
        pending.append(q)
        rows += len(q.vectors)
        if rows >= batch:
            _search_batch(search, pending, purpose, now, threshold, k, pairs)
            if on_batch is not None:
                on_batch(len(pending))
            pending, rows = [], 0
            if cancelled is not None and cancelled():
                return pairs
    if pending:
        _search_batch(search, pending, purpose, now, threshold, k, pairs)
        if on_batch is not None:
            on_batch(len(pending))
    return pairs


def _search_batch(search: PairSearch, batch: list[Query], purpose: str, now: float, threshold: float, k: int,
                  pairs: dict[PairKey, float]) -> None:
    Q = np.ascontiguousarray(np.vstack([q.vectors for q in batch]), dtype=np.float32)
    owners = np.repeat(np.asarray([q.subject_id for q in batch], np.int64), [len(q.vectors) for q in batch])
    todo = np.arange(len(Q))
    while len(todo):
        results = search.search_many(Q[todo], k, purpose, now, exclude_subjects=owners[todo].tolist())
        saturated = []
        for i, hits in zip(todo.tolist(), results):
            owner = int(owners[i])
            passing = [h for h in hits if h.score >= threshold and h.subject_id != owner]
            for h in passing:
                key = (owner, h.subject_id) if owner < h.subject_id else (h.subject_id, owner)
                if h.score > pairs.get(key, -2.0):
                    pairs[key] = h.score
            if len(passing) >= k:
                saturated.append(i)
        if not saturated or k >= MAX_K:
            return
        todo, k = np.asarray(saturated, np.int64), min(MAX_K, k * 4)


@dataclass(frozen=True)
class Component:
    """One cluster: its subjects (internal ids, ascending) and the pairs joining them."""

    members: tuple[int, ...]
    pairs: tuple[tuple[int, int, float], ...]

    @property
    def key(self) -> str:
        return cluster_key(self.members)

    @property
    def max_score(self) -> float:
        return max(s for _a, _b, s in self.pairs)


def cluster_key(members: Iterable[int]) -> str:
    """A stable key for a set of subjects: the same people make the same key in every run. A
    digest of the internal ids, so the key itself says nothing about who they are."""
    text = ",".join(str(m) for m in sorted(members))
    return hashlib.sha256(b"facegate/dedup-cluster/v1|" + text.encode()).hexdigest()[:32]


def components(pairs: Mapping[PairKey, float]) -> list[Component]:
    """Connected components of the pair graph, highest best score first."""
    group = component_of((), pairs)
    groups: dict[int, list[tuple[int, int, float]]] = {}
    for (a, b), s in pairs.items():
        groups.setdefault(group[a], []).append((a, b, s))
    out = [Component(tuple(sorted({x for a, b, _s in g for x in (a, b)})), tuple(sorted(g, key=lambda p: -p[2])))
           for g in groups.values()]
    return sorted(out, key=lambda c: (-c.max_score, c.members))
