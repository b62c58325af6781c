"""Transition ids are what consumers deduplicate on: a replay, or the same event after an
upgrade, must give the same id. Stamp builds them from parts formatted once per evaluation."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from processors.common.timeutil import iso
from processors.segments.catalog import Stamp, transition

text = st.text(min_size=1, max_size=30)


def written_before(pid: str, segment: str, kind: str, now: int, cause: str) -> str:
    """The id as every earlier release computed it."""
    return hashlib.sha1(f"{pid}|{segment}|{kind}|{now}|{cause}".encode()).hexdigest()[:24]


@given(text, st.lists(st.tuples(text, st.sampled_from(["entered", "exited"])), min_size=1, max_size=8),
       st.integers(0, 4_102_444_800_000), text)
def test_one_stamp_gives_each_transition_the_id_and_fields_it_always_had(
        pid: str, transitions: list[tuple[str, str]], now: int, cause: str) -> None:
    stamp = Stamp(pid, now, cause)
    for segment, kind in transitions:
        record = stamp.transition(segment, kind)
        assert record == {"type": "segment", "transition": kind, "profile_id": pid, "segment": segment,
                          "occurred_at": iso(now), "at": now, "caused_by": cause,
                          "transition_id": written_before(pid, segment, kind, now, cause)}
        assert transition(pid, segment, kind, now, cause) == record
