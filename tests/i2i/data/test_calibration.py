"""Calibration: DuckDB's related pairs equal the Beam chain's, and the figures say what the data holds."""
import numpy as np
import pyarrow.compute as pc
import pytest

from embedding.baselines.oracle import attribute_codes, oracle_ranks, oracle_scores
from i2i.app.cli import main
from i2i.app.data.calibration import calibrate, related_pairs
from i2i.app.data.fashion_notes import FashionConfig, attributes_table, generate
from i2i.core.io import read_table, write_events_by_day, write_table

# a small world: few users, so fewer repeated pairs than at full size; still far above chance
CONFIG = FashionConfig(notes=1200, users=50, days=6, test_days=2, seed=11, sessions_per_day=10.0)


@pytest.fixture(scope="module")
def world():
    return generate(CONFIG)


def test_duckdb_pairs_equal_the_beam_chain(world, tmp_path):
    write_table(world.notes, tmp_path / "notes")
    write_events_by_day(world.events, tmp_path / "events")
    since = str(int(CONFIG.test_since.timestamp() * 1000))
    assert main(["cooccur", "--events", str(tmp_path / "events"), "--out", str(tmp_path / "cooccur"),
                 "--runner=DirectRunner"]) == 0
    assert main(["pairs", "--related", str(tmp_path / "cooccur" / "related"), "--notes", str(tmp_path / "notes"),
                 "--out", str(tmp_path / "pairs"), "--test-since", since, "--runner=DirectRunner"]) == 0
    beam = read_table(tmp_path / "pairs")
    duck = related_pairs(world.events)
    beam_rows = {(q, t): s for q, t, s in zip(*(beam.column(c).to_pylist()
                                                 for c in ("query_note_id", "target_note_id", "score")))}
    duck_rows = {(q, t): s for q, t, s in zip(*(duck.column(c).to_pylist()
                                                 for c in ("query_note_id", "target_note_id", "score")))}
    # the Beam chain drops pairs with one note in the test period and one before it
    published = dict(zip(world.notes.column("note_id").to_pylist(),
                         world.notes.column("published_at").cast("int64").to_pylist()))
    is_test = {n: p >= int(since) for n, p in published.items()}
    duck_kept = {k: s for k, s in duck_rows.items() if is_test[k[0]] == is_test[k[1]]}
    assert len(beam_rows) > 500
    assert set(duck_kept) == set(beam_rows)
    assert all(abs(duck_kept[k] - beam_rows[k]) <= 1e-12 * beam_rows[k] for k in beam_rows)
    test = beam.filter(pc.equal(beam.column("split"), "test"))
    figures = calibrate(world.notes, world.events, attributes_table(world), int(since))
    assert figures["pairs"]["test"] == test.num_rows
    assert figures["pairs"]["train_val"] == beam.num_rows - test.num_rows


def test_related_pairs_share_a_product_far_more_than_chance(world):
    figures = calibrate(world.notes, world.events, attributes_table(world), int(CONFIG.test_since.timestamp() * 1000))
    share, chance = figures["share_all_pairs"], figures["chance"]
    assert share["same_product"] > 15 * chance["same_product"]
    assert share["same_category"] > 2 * chance["same_category"]
    assert share["same_colour"] > 2 * chance["same_colour"]
    assert figures["pairs"]["test"] > 50 and figures["test_pool_notes"] > 100


def test_oracle_ranks_equal_full_scoring():
    attributes = attributes_table(generate(FashionConfig(notes=300, users=20, days=2, seed=5)))
    ids = attributes.column("note_id").to_pylist()
    codes = attribute_codes(attributes, ids)
    rng = np.random.default_rng(0)
    queries = rng.integers(0, len(ids), 200)
    targets = (queries + rng.integers(1, len(ids), 200)) % len(ids)
    scores = oracle_scores(codes, queries)
    rows = np.arange(len(queries))
    expected = (scores >= scores[rows, targets][:, None]).sum(axis=1) - 1  # the query itself is always at the top
    assert np.array_equal(oracle_ranks(codes, queries, targets), expected)
    same_product = codes[queries, 0] == codes[targets, 0]
    assert same_product.any() == bool((scores[rows, targets] == 4).any())
