"""Transitions a profile remembers for replays are stored packed; a replay re-sends them whole."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.identity.graph import _pack, _pack_onto, _unpack_all
from processors.segments.catalog import transition

names = st.text(min_size=1, max_size=12)
extras = st.dictionaries(st.sampled_from(["reason", "continued", "note"]),
                         st.one_of(st.booleans(), names), max_size=2)
PID = "p_1"

# what one source decides: transitions of this profile (few instants and causes, so many share
# them, some with extra fields), others' transitions and other records kept whole
change_st = st.one_of(
    st.builds(lambda seg, kind, at, cause, extra: {**transition(PID, seg, kind, at, cause), **extra},
              st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(["entered", "exited"]),
              st.sampled_from([0, 1, 2**41]), st.sampled_from(["m1", "m2", "tick"]),
              st.one_of(st.just({}), extras)),
    st.builds(lambda other, at: transition(other, "s", "entered", at, "m"), names.filter(lambda n: n != PID),
              st.integers(0, 2**42)),
    st.builds(lambda into: {"type": "merged", "profile_id": PID, "into": into}, names))


@given(st.lists(change_st, max_size=12), st.lists(change_st, max_size=12))
def test_packed_transitions_unpack_to_the_same_records(first: list[dict[str, Any]],
                                                       then: list[dict[str, Any]]) -> None:
    """Packed in two steps (a source's deadlines caught up, then its event), unpacked at once."""
    packed = _pack_onto(_pack_onto([], first, PID), then, PID)
    assert _unpack_all(packed, PID) == first + then
    assert len(packed) == len(first) + len(then)


@given(st.lists(st.sampled_from(["s1", "s2", "s3", "s4"]), min_size=1, max_size=10),
       st.integers(0, 2**42), names)
def test_one_evaluations_transitions_keep_their_instant_and_cause_once(
        segments: list[str], at: int, cause: str) -> None:
    changes = [transition(PID, s, "entered", at, cause) for s in segments]
    packed = _pack_onto([], changes, PID)
    assert packed[0] == [segments[0], "entered", at, cause]
    assert all(p == [s, "entered"] for p, s in zip(packed[1:], segments[1:], strict=True))


@given(pid=names, other=names, at=st.integers(0, 2**42))
def test_records_that_cannot_be_derived_again_are_kept_whole(pid: str, other: str, at: int) -> None:
    foreign = transition(other, "s", "entered", at, "m")
    if other != pid:
        assert _pack(foreign, pid) is foreign
    merged = {"type": "merged", "profile_id": pid, "into": other}
    assert _pack(merged, pid) is merged
    assert _unpack_all([merged], pid)[0] is merged
