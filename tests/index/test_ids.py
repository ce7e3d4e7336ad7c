"""The int64 id <-> note_id mapping: one-to-one, round-trips through ids.parquet, ids never reused."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from index.ids import IdMap, IdMapError, vector_fingerprints


def fingerprints(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.uint64)


def test_assign_gives_distinct_ids_and_maps_back():
    ids = IdMap()
    labels = ids.assign(["a", "b", "c"], fingerprints(3))
    assert labels.tolist() == [0, 1, 2]
    assert ids.note_ids_of(np.array([[2, -1, 0]])).tolist() == [["c", None, "a"]]
    assert ids.id_of("b") == 1 and ids.id_of("zzz") is None


def test_removed_ids_are_never_reused():
    ids = IdMap()
    ids.assign(["a", "b"], fingerprints(2))
    assert ids.remove(["a"]).tolist() == [0]
    new = ids.assign(["a", "d"], fingerprints(2))
    assert set(new.tolist()).isdisjoint({0, 1})
    assert ids.note_ids_of(np.array([0])).tolist() == [None]


def test_assigning_a_mapped_note_again_is_refused():
    ids = IdMap()
    ids.assign(["a"], fingerprints(1))
    with pytest.raises(IdMapError, match="already mapped"):
        ids.assign(["a"], fingerprints(1))
    with pytest.raises(IdMapError, match="twice"):
        ids.assign(["x", "x"], fingerprints(2))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.text(min_size=1, max_size=6), max_size=8, unique=True)),
                max_size=12))
def test_any_sequence_of_changes_stays_one_to_one_and_round_trips(operations):
    ids = IdMap()
    for is_add, names in operations:
        if is_add:
            fresh = [n for n in names if n not in ids]
            ids.assign(fresh, fingerprints(len(fresh)))
        else:
            ids.remove(names)
    live = ids.live_ids()
    names = ids.note_ids_of(live).tolist()
    assert len(set(live.tolist())) == len(live) == len(set(names)) == len(ids)
    restored = IdMap.from_arrow(ids.to_arrow(), next_id=ids.next_id)
    assert restored.note_ids_of(live).tolist() == names
    assert all(restored.id_of(n) == ids.id_of(n) for n in names)
    assert restored.fingerprint_of(live).tolist() == ids.fingerprint_of(live).tolist()


def test_a_table_that_is_not_one_to_one_is_refused():
    duplicate_note = pa.table({"id": pa.array([0, 1], pa.int64()), "note_id": ["a", "a"],
                               "fingerprint": pa.array([1, 2], pa.uint64())})
    with pytest.raises(IdMapError, match="one note id to several"):
        IdMap.from_arrow(duplicate_note)
    duplicate_id = pa.table({"id": pa.array([3, 3], pa.int64()), "note_id": ["a", "b"],
                             "fingerprint": pa.array([1, 2], pa.uint64())})
    with pytest.raises(IdMapError, match="one int64 id to several"):
        IdMap.from_arrow(duplicate_id)
    beyond = pa.table({"id": pa.array([9], pa.int64()), "note_id": ["a"], "fingerprint": pa.array([1], pa.uint64())})
    with pytest.raises(IdMapError, match="next_id"):
        IdMap.from_arrow(beyond, next_id=5)


def test_fingerprints_change_with_any_component_and_not_otherwise():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    base = vector_fingerprints(vectors)
    assert len(set(base.tolist())) == 50
    assert (vector_fingerprints(vectors.copy()) == base).all()
    changed = vectors.copy()
    changed[:, 15] = np.nextafter(changed[:, 15], np.float32(np.inf))
    assert (vector_fingerprints(changed) != base).all()
