import io
import re

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from i2i.app.cli import main
from i2i.app.data import fashion_notes, images
from i2i.app.data.fashion_notes import CATEGORIES, COLOURS, FashionConfig, generate
from i2i.core.io import read_table
from i2i.core.schemas import validate

SMALL = FashionConfig(notes=300, users=80, days=5, seed=7)


@pytest.fixture(scope="module")
def world():
    return generate(SMALL)


def test_tables_conform_and_images_are_real_png(world):
    assert validate(world.notes, "notes").ok
    assert validate(world.events, "events").ok
    image = Image.open(io.BytesIO(world.notes.column("image")[0].as_py()))
    assert image.format == "PNG" and image.size == (images.IMAGE_SIZE, images.IMAGE_SIZE)
    assert world.image_source_real == (images.load_fashion_mnist() is not None)


def test_same_seed_same_data_other_seed_other_data(world):
    again = generate(SMALL)
    assert again.notes.equals(world.notes) and again.events.equals(world.events)
    other = generate(FashionConfig(notes=300, users=80, days=5, seed=8))
    assert not other.events.equals(world.events)


def test_short_notes_do_not_name_category_or_colour(world):
    short = world.attributes.short
    assert 0.05 < short.mean() < 0.16
    vocabulary = {w for _, synonyms in CATEGORIES for w in synonyms} | {c for c, _ in COLOURS}
    for i in np.flatnonzero(short):
        row = world.notes.slice(int(i), 1).to_pylist()[0]
        text = " ".join([row["title"], " ".join(row["topics"]), row["content"]]).lower()
        assert not any(re.search(rf"\b{re.escape(word)}\b", text) for word in vocabulary), text
    long_lengths = [len(c.split()) for c, s in zip(world.notes.column("content").to_pylist(), short) if not s]
    assert np.mean(long_lengths) > 25


def test_events_only_touch_published_notes_and_follow_interests(world):
    notes = world.notes
    published = dict(zip(notes.column("note_id").to_pylist(), notes.column("published_at").to_pylist()))
    for row in world.events.slice(0, 2000).to_pylist():
        assert row["ts"] >= published[row["note_id"]].replace(hour=0, minute=0, second=0)
    clicks = world.events.filter(pc.equal(world.events.column("action"), "click"))
    assert 0.1 < clicks.num_rows / world.events.num_rows < 0.6
    # Consecutive clicks of one user share a category far more often than chance (1/10).
    category = dict(zip(notes.column("note_id").to_pylist(), world.attributes.category))
    rows = clicks.sort_by([("user_id", "ascending"), ("ts", "ascending")]).to_pylist()
    same = [category[a["note_id"]] == category[b["note_id"]]
            for a, b in zip(rows, rows[1:]) if a["user_id"] == b["user_id"]]
    assert np.mean(same) > 0.3


def test_cli_writes_partitioned_events(tmp_path):
    out = tmp_path / "fn"
    assert main(["data", "fashion-notes", "--out", str(out), "--notes", "120", "--users", "30", "--days", "3"]) == 0
    assert sorted(p.name for p in (out / "events").iterdir()) == ["dt=2026-11-01", "dt=2026-11-02", "dt=2026-11-03"]
    assert read_table(out / "notes").num_rows == 120
    assert validate(read_table(out / "events"), "events").ok


def test_drawn_images_fallback_keeps_categories_apart():
    source = images.drawn_images(np.random.default_rng(0), per_label=5)
    assert not source.real
    means = [source.by_label[label].mean(axis=0) for label in range(10)]
    assert min(np.abs(means[a] - means[b]).mean() for a in range(10) for b in range(a + 1, 10)) > 5
    assert fashion_notes.tinted_png(source.pick(3, np.random.default_rng(1)), (200, 30, 35))[:4] == b"\x89PNG"
