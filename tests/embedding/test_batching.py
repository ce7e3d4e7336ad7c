import random

import pyarrow as pa

from embedding.batching import one_epoch, pair_batches, select_pairs
from i2i.core.schemas import PAIRS


def star_and_chain_pairs():
    """Many pairs share notes (a hub and a chain), so naive batches would repeat notes."""
    pairs = [("hub", f"s{i}") for i in range(10)] + [(f"c{i}", f"c{i+1}") for i in range(30)]
    return pairs


def test_batches_never_hold_a_note_twice_and_cover_an_epoch():
    pairs = star_and_chain_pairs()
    batches = list(one_epoch(pairs, 4, random.Random(0), allow_partial=True))
    for batch in batches:
        notes = [n for pair in batch for n in pair]
        assert len(notes) == len(set(notes))
        assert 2 <= len(batch) <= 4
    covered = [pair for batch in batches for pair in batch]
    assert len(covered) == len(set(covered))
    assert len(covered) >= len(pairs) - 3 * 4  # only the tail that cannot fill a batch may be left


def test_full_batches_only_for_multi_process_and_shards_differ():
    pairs = star_and_chain_pairs()
    stream_a = pair_batches(pairs, 4, seed=1, allow_partial=False, shard=(0, 2))
    stream_b = pair_batches(pairs, 4, seed=1, allow_partial=False, shard=(1, 2))
    a = [next(stream_a) for _ in range(12)]
    b = [next(stream_b) for _ in range(12)]
    assert all(len(batch) == 4 for batch in a + b)
    assert a[0] != b[0]


def test_bad_pairs_become_dead_letters():
    table = pa.Table.from_pylist([
        {"query_note_id": "a", "target_note_id": "b", "score": 1.0, "split": "train"},
        {"query_note_id": "a", "target_note_id": "a", "score": 1.0, "split": "train"},
        {"query_note_id": "zz", "target_note_id": "b", "score": 1.0, "split": "train"},
        {"query_note_id": "a", "target_note_id": "zz", "score": 1.0, "split": "train"},
        {"query_note_id": "b", "target_note_id": "a", "score": 1.0, "split": "val"},
    ], schema=PAIRS)
    selected = select_pairs(table, {"a", "b"}, "train")
    assert selected.pairs == [("a", "b")]
    assert selected.reasons == {"query and target are the same note": 1, "query note not in the notes table": 1,
                                "target note not in the notes table": 1}
    assert all('"zz"' in row["raw"] or '"a"' in row["raw"] for row in selected.dead_letters)
