"""The bridge's pure parts: how frames become Kafka records, and how a result record's headers
say whether it was passed on already."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from dsotp_streams.runtime.bridge import _order, batch_by_area
from dsotp_streams.runtime.fanout import SEQ_HEADER, STAMP_HEADER


@given(
    areas=st.lists(st.sampled_from(["north", "south", "east"]), max_size=300),
    max_frames=st.integers(min_value=1, max_value=64),
)
def test_every_frame_lands_in_one_record_of_its_area_in_order(
    areas: list[str], max_frames: int
) -> None:
    chunks = batch_by_area(areas, max_frames=max_frames)
    seen = [k for _area, indices in chunks for k in indices]
    assert sorted(seen) == list(range(len(areas)))  # each frame exactly once
    for area, indices in chunks:
        assert 1 <= len(indices) <= max_frames
        assert {areas[k] for k in indices} == {area}
    for area in set(areas):  # an area's records, read in order, give its frames in order
        order = [k for a, indices in chunks if a == area for k in indices]
        assert order == sorted(order)
    # no more records than needed
    assert len(chunks) == sum(-(-areas.count(a) // max_frames) for a in set(areas))


def test_a_result_record_is_ordered_by_its_stamp_then_its_sequence() -> None:
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    first = _order([(STAMP_HEADER, t.isoformat().encode()), (SEQ_HEADER, b"1")])
    second = _order([(STAMP_HEADER, t.isoformat().encode()), (SEQ_HEADER, b"2")])
    assert first is not None and second is not None and first < second
    assert _order([]) is None  # a dead letter: never dropped as a repeat
    assert _order([(STAMP_HEADER, b"not a time")]) is None
