"""The whole identity protocol: identity's and privacy's record handlers in one table.

The stage that runs the protocol (stream/runtime/agents.py) builds this table once with `handlers()`;
each module registers its own kinds (processors/common/records.py), so neither changes the other's
table and identity.py does not import privacy.py (privacy builds on identity, not the reverse).
"""

from __future__ import annotations

from processors.common.records import Handlers
from processors.identity import graph as identity
from processors.identity import unlink
from processors.privacy import protocol as privacy

Message = identity.Message


def handlers() -> Handlers:
    table = Handlers()
    identity.register(table)
    unlink.register(table)
    privacy.register(table)
    return table


ALL = handlers()


def handle(key: str, msg: Message, store: identity.Store, cfg: identity.IdentityConfig,
           source: tuple[int, int] | None = None, env: identity.Env | None = None) -> identity.Effects:
    """identity.handle with every kind of the protocol (privacy's included)."""
    return identity.handle(key, msg, store, cfg, source, env, ALL)
