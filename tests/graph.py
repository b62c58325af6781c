"""The independent answer identity resolution must reach: connected components."""

from __future__ import annotations

from collections import defaultdict


def components(groups_of_keys: list[list[str]]) -> list[set[str]]:
    """Union-find over identifier keys that appeared together on one event."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for keys in groups_of_keys:
        for k in keys:
            parent[find(k)] = find(keys[0])
    out: dict[str, set[str]] = defaultdict(set)
    for k in parent:
        out[find(k)].add(k)
    return list(out.values())
