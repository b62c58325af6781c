"""Transitions a profile remembers for replays are stored packed; a replay re-sends them whole."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.identity.graph import _pack, _unpack
from processors.segments.catalog import transition

names = st.text(min_size=1, max_size=12)
extras = st.dictionaries(st.sampled_from(["reason", "continued", "note"]),
                         st.one_of(st.booleans(), names), max_size=2)


@given(pid=names, segment=names, kind=st.sampled_from(["entered", "exited"]),
       at=st.integers(0, 2**42), cause=names, extra=extras)
def test_a_packed_transition_unpacks_to_the_same_record(pid: str, segment: str, kind: str, at: int,
                                                        cause: str, extra: dict[str, Any]) -> None:
    change = {**transition(pid, segment, kind, at, cause), **extra}
    packed = _pack(change, pid)
    assert isinstance(packed, list)
    assert _unpack(packed, pid) == change


@given(pid=names, other=names, at=st.integers(0, 2**42))
def test_records_that_cannot_be_derived_again_are_kept_whole(pid: str, other: str, at: int) -> None:
    foreign = transition(other, "s", "entered", at, "m")
    if other != pid:
        assert _pack(foreign, pid) is foreign
    merged = {"type": "merged", "profile_id": pid, "into": other}
    assert _pack(merged, pid) is merged
    assert _unpack(merged, pid) is merged
