"""The records of the identity protocol: their kinds, one constructor each, and the handler table.

Every record on the internal topic is a JSON object whose `"k"` names its kind with one letter
(processors/identity/graph.py explains the protocol). `Kind` is a `str` enum, so a record built here
encodes exactly as the one-letter literal did (tests/unit/test_records.py proves it byte by byte).

Handlers are registered explicitly into a `Handlers` table by the module that owns them
(`identity.register`, `privacy.register`); processors/protocol.py assembles the full table the
worker runs with. No module adds to another module's table at import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from processors.common.errors import TuskError

Message = dict[str, Any]


class Kind(StrEnum):
    EVENT = "E"
    """key=identifier: a validated event, routed by its highest-priority identifier"""
    APPLY = "A"
    """key=profile: apply the event; link identifiers the profile did not have yet"""
    LINK = "L"
    """key=identifier: this identifier belongs to profile P (claim it, or ask for a merge)"""
    FREEZE = "F"
    """key=loser: freeze the loser (leave a redirect) and ship it to the survivor"""
    MERGE = "M"
    """key=survivor: merge the shipped loser in (or give it back)"""
    RESTORE = "X"
    """key=loser: restore a loser whose merge was refused"""
    DROP_LINK = "U"
    """key=profile: drop an identifier the profile had taken optimistically"""
    CHECK = "C"
    """key=identifier: "P dropped me": answer I if the identifier points at P after all"""
    IDENTITY_BACK = "I"
    """key=profile: list an identifier its partition says points here"""
    REPOINT = "R"
    """key=identifier: repoint an identifier from a merged loser to its survivor"""
    QUARANTINE_OP = "O"
    """key=identifier: an operator's quarantine release"""
    GROUP_TRAITS = "G"
    """key=account: group traits onto the account profile"""
    ACCOUNT_TRAITS = "K"
    """key=profile: an account's traits, copied onto a member's membership"""
    PRIVACY_REQUEST = "P"
    """key=identifier: a privacy request (export or erase) naming this identifier"""
    PROFILE_REQUEST = "Q"
    """key=profile: the privacy request, carried out on the profile"""
    ERASE_PART = "Z"
    """key=identifier, redirect or account: erase one part of an erased person"""
    ERASE_ACK = "Y"
    """key=profile: a part of an erasure is done"""
    MERGED_VIA = "V"
    """key=profile: the loser of a merge forwarded through this profile landed in a survivor"""
    UNLINK_REQUEST = "N"
    """key=identifier: an operator's unlink: block the identifier, split the profile holding it"""
    SPLIT = "S"
    """key=profile: split this profile without the unlinked identifier (processors/identity/unlink.py)"""
    JOURNAL_ASK = "J"
    """key=profile: send your journal (recent events) to the profile being split"""
    JOURNAL = "W"
    """key=profile: a merged profile's journal, for the split"""
    BUILD = "H"
    """key=profile: a person rebuilt by a split, to store under its id"""
    TICK = "T"
    """key=b"tick", stream layer only: time passes (event-time watermarks of the sources)"""
    BACKFILL = "B"
    """key=b"backfill", stream layer only: re-evaluate the next batch of a partition's profiles"""


# ------------------------------------------------------------------------------ constructors
# The key order of each record is the order the protocol has always written (byte-identical).


def event(ev: Mapping[str, Any]) -> Message:
    return {"k": Kind.EVENT, "ev": dict(ev)}


def apply(ev: Any, known: list[str], via: list[str]) -> Message:
    return {"k": Kind.APPLY, "ev": ev, "known": known, "via": via}


def link(pid: str) -> Message:
    return {"k": Kind.LINK, "pid": pid}


def freeze(survivor: str, link: Any, req: Any) -> Message:
    return {"k": Kind.FREEZE, "s": survivor, "link": link, "req": req}


def merge(snap: Any, nonce: Any, link: Any, req: Any) -> Message:
    return {"k": Kind.MERGE, "snap": snap, "nonce": nonce, "link": link, "req": req}


def restore(snap: Any, nonce: Any) -> Message:
    return {"k": Kind.RESTORE, "snap": snap, "nonce": nonce}


def drop_link(key: str, holder: str | None) -> Message:
    return {"k": Kind.DROP_LINK, "key": key, "h": holder}


def check(pid: str) -> Message:
    return {"k": Kind.CHECK, "pid": pid}


def identity_back(key: str) -> Message:
    return {"k": Kind.IDENTITY_BACK, "key": key}


def repoint(loser: str, survivor: str) -> Message:
    return {"k": Kind.REPOINT, "from": loser, "to": survivor}


def quarantine_op(op: str) -> Message:
    return {"k": Kind.QUARANTINE_OP, "op": op}


def group_traits(gid: str, traits: Any, ts: int, mid: Any, pid: str) -> Message:
    return {"k": Kind.GROUP_TRAITS, "gid": gid, "traits": traits, "ts": ts, "mid": mid, "pid": pid}


def account_traits(aid: str, traits: Any, tt: Any) -> Message:
    return {"k": Kind.ACCOUNT_TRAITS, "aid": aid, "traits": traits, "tt": tt}


def privacy_request(op: str, rid: str) -> Message:
    return {"k": Kind.PRIVACY_REQUEST, "op": op, "rid": rid}


def profile_request(op: str, rid: str, ih: str | None = None) -> Message:
    msg: Message = {"k": Kind.PROFILE_REQUEST, "op": op, "rid": rid}
    if ih is not None:
        msg["ih"] = ih
    return msg


def erase_part(what: str, pids: list[str], **more: Any) -> Message:
    return {"k": Kind.ERASE_PART, "what": what, "pids": pids, **more}


def erase_ack(rid: str) -> Message:
    return {"k": Kind.ERASE_ACK, "rid": rid}


def merged_via(loser: str, into: str, refused: str | None = None) -> Message:
    """V; `refused`: the nonce of the loser's freeze, when its merge was refused (into = loser)."""
    msg: Message = {"k": Kind.MERGED_VIA, "loser": loser, "into": into}
    if refused is not None:
        msg["refused"] = refused
    return msg


def unlink_request(op: str) -> Message:
    return {"k": Kind.UNLINK_REQUEST, "op": op}


def split(key: str, op: str) -> Message:
    return {"k": Kind.SPLIT, "key": key, "op": op}


def journal_ask(to: str, op: str) -> Message:
    return {"k": Kind.JOURNAL_ASK, "to": to, "op": op}


def journal(sender: str, op: str, events: list[Any], complete: bool, n: int) -> Message:
    return {"k": Kind.JOURNAL, "from": sender, "op": op, "events": events, "complete": complete, "n": n}


def build(profile: Any, events: list[Any]) -> Message:
    return {"k": Kind.BUILD, "profile": profile, "events": events}


def tick(src: Any = None, of: int | None = None) -> Message:
    """A tick; with `src` (event-time clock) the source partitions' report and their count."""
    return {"k": Kind.TICK} if src is None else {"k": Kind.TICK, "src": src, "of": of}


def backfill(fp: str, after: str | None) -> Message:
    return {"k": Kind.BACKFILL, "fp": fp, "after": after}


# ---------------------------------------------------------------------------- handler table

Handler = Callable[..., None]
"""handler(key, msg, store, cfg, fx, source): what one kind does (processors/identity/graph.py)"""


class UnknownKind(TuskError, KeyError):
    """A record whose kind no registered handler takes (the record's fault: DLQ it)."""


class Handlers:
    """Which handler takes which record kind; filled by explicit `register` calls."""

    def __init__(self) -> None:
        self._table: dict[str, Handler] = {}
        self.extension: Any = None
        """steps a module adds inside identity's handlers (processors.identity.graph.Extension)"""

    def register(self, kind: Kind, handler: Handler) -> None:
        if kind in self._table:
            raise ValueError(f"record kind {kind.value!r} ({kind.name}) is registered twice")
        self._table[kind] = handler

    def register_all(self, handlers: Mapping[Kind, Handler]) -> None:
        for kind, handler in handlers.items():
            self.register(kind, handler)

    def __getitem__(self, kind: str) -> Handler:
        try:
            return self._table[kind]
        except KeyError:
            raise UnknownKind(f"no handler for record kind {kind!r}") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._table

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._table)
