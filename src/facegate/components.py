"""Connected components of an undirected graph given by its edges (union–find with path
halving: a dozen lines, where a graph library would be a dependency for one call). Used to
group images into identities (evaluation) and duplicate pairs into clusters (registry)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def component_of(nodes: Iterable[T], edges: Iterable[tuple[T, T]]) -> dict[T, T]:
    """Each node (of ``nodes`` and of ``edges``) mapped to one representative of its component."""
    parent: dict[T, T] = {}

    def root(x: T) -> T:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x in nodes:
        root(x)
    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    return {x: root(x) for x in list(parent)}
