import io
import json
import re

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from i2i.app.cli import main
from i2i.app.data import images
from i2i.app.data.fashion_notes import FashionConfig, attributes_table, generate
from i2i.app.data.fashion_text import identifying_words
from i2i.core.io import read_table
from i2i.core.schemas import validate

SMALL = FashionConfig(notes=600, users=60, days=5, test_days=2, seed=7)


@pytest.fixture(scope="module")
def world():
    return generate(SMALL)


def note_text(row) -> str:
    return " ".join([row["title"], " ".join(row["topics"]), row["content"]]).lower()


def test_tables_conform_and_images_are_real_png(world):
    assert validate(world.notes, "notes").ok
    assert validate(world.events, "events").ok
    image = Image.open(io.BytesIO(world.notes.column("image")[0].as_py()))
    assert image.format == "PNG" and image.size == (images.IMAGE_SIZE, images.IMAGE_SIZE)
    assert world.image_source_real == (images.load_fashion_mnist() is not None)


def test_same_seed_same_data_other_seed_other_data(world):
    again = generate(SMALL)
    assert again.notes.equals(world.notes) and again.events.equals(world.events)
    assert again.deletes.equals(world.deletes) and attributes_table(again).equals(attributes_table(world))
    other = generate(FashionConfig(notes=600, users=60, days=5, test_days=2, seed=8))
    assert not other.events.equals(world.events)
    assert other.notes.column("title") != world.notes.column("title")


def test_products_have_long_tailed_notes_with_their_own_photos(world):
    counts = np.bincount(world.attributes.product)
    assert (counts == 1).mean() > 0.3 and counts.max() >= 10
    # two notes of one product: the same garment in another shot, not the same bytes
    product = int(np.argmax(counts))
    notes = np.flatnonzero(world.attributes.product == product)[:2]
    photos = [np.asarray(Image.open(io.BytesIO(world.notes.column("image")[int(i)].as_py())), dtype=np.float32)
              for i in notes]
    assert world.notes.column("image")[int(notes[0])] != world.notes.column("image")[int(notes[1])]
    assert np.abs(photos[0] - photos[1]).mean() > 1


def test_short_notes_name_no_product_category_or_colour(world):
    short = world.attributes.short
    assert 0.06 < short.mean() < 0.14
    vocabulary = identifying_words()
    rows = world.notes.select(["title", "topics", "content"]).to_pylist()
    for i in np.flatnonzero(short):
        text = note_text(rows[i])
        found = [w for w in vocabulary if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]
        assert not found, (text, found)
        assert len(text.split()) < 35
    # long notes do name their product most of the time, and run long
    names = attributes_table(world).column("product_name").to_pylist()
    long_rows = [i for i in range(len(rows)) if not short[i]]
    named = [any(part.lower() in note_text(rows[i]) for part in names[i].split()) for i in long_rows]
    assert np.mean(named) > 0.8
    assert np.mean([len(note_text(rows[i]).split()) for i in long_rows]) > 60


def test_events_touch_live_notes_and_sessions_stay_on_a_product(world):
    attrs = world.attributes
    position = {n: i for i, n in enumerate(world.notes.column("note_id").to_pylist())}
    note = np.array([position[n] for n in world.events.column("note_id").to_pylist()])
    first_day = int(world.events.column("ts").cast("int64").to_numpy().min() // 86_400_000)
    ts_day = world.events.column("ts").cast("int64").to_numpy() // 86_400_000 - first_day
    assert np.all(attrs.published_day[note] <= ts_day)
    assert np.all(attrs.deleted_day[note] > ts_day)
    clicks = world.events.filter(pc.equal(world.events.column("action"), "click"))
    assert 0.2 < clicks.num_rows / world.events.num_rows < 0.5
    # consecutive clicks of one user share the product far more often than two random notes
    user = clicks.column("user_id").to_pylist()
    product = attrs.product[[position[n] for n in clicks.column("note_id").to_pylist()]]
    same = [product[i] == product[i + 1] for i in range(len(user) - 1) if user[i] == user[i + 1]]
    chance = ((np.bincount(attrs.product) / len(attrs.product)) ** 2).sum()
    assert np.mean(same) > 20 * chance


def test_cli_writes_the_layout_and_calibration(tmp_path, capsys):
    out = tmp_path / "fn"
    assert main(["data", "fashion-notes", "--out", str(out), "--notes", "300", "--users", "30", "--days", "3",
                 "--test-days", "1"]) == 0
    days = ["dt=2026-11-01", "dt=2026-11-02", "dt=2026-11-03"]
    assert sorted(p.name for p in (out / "events").iterdir()) == days
    assert sorted(p.name for p in (out / "deletes").iterdir()) == days
    assert read_table(out / "notes").num_rows == 300
    assert validate(read_table(out / "events"), "events").ok
    attributes = read_table(out / "_attributes")
    assert {"note_id", "product_id", "category", "colour", "short"} <= set(attributes.column_names)
    summary = json.loads((out / "_SUMMARY.json").read_text())
    calibration = summary["calibration"]
    assert set(calibration["share_test_pairs"]) == {"same_product", "same_category", "same_colour"}
    assert calibration["oracle_recall_at_100"]["all"] is not None
    assert "oracle R@100" in capsys.readouterr().out


def test_bad_sizes_are_refused(tmp_path):
    assert main(["data", "fashion-notes", "--out", str(tmp_path), "--notes", "0"]) == 2
    assert main(["data", "fashion-notes", "--out", str(tmp_path), "--test-days", "-1"]) == 2


def test_photo_augmentation_keeps_tint_and_varies_shots():
    rng = np.random.default_rng(0)
    garment = np.zeros((4, 28, 28), dtype=np.uint8)
    garment[:, 6:22, 6:22] = 255
    red = np.tile(np.array([[200, 30, 35]]), (4, 1))
    shots = images.augmented_photos(garment, red, rng)
    assert shots.shape == (4, images.IMAGE_SIZE, images.IMAGE_SIZE, 3) and shots.dtype == np.uint8
    centre = shots[:, 28:36, 28:36].reshape(4, -1, 3).mean(axis=1)
    assert np.all(centre[:, 0] > 2 * centre[:, 2])  # red garment in the middle
    corner = shots[:, :3, :3].reshape(4, -1, 3).mean(axis=1)
    assert np.all(corner > 180)  # light background
    assert np.abs(shots[0].astype(int) - shots[1].astype(int)).mean() > 1


def test_drawn_images_fallback_keeps_categories_apart():
    source = images.drawn_images(np.random.default_rng(0), per_label=5)
    assert not source.real
    means = [source.by_label[label].mean(axis=0) for label in range(10)]
    assert min(np.abs(means[a] - means[b]).mean() for a in range(10) for b in range(a + 1, 10)) > 5
    assert images.tinted_png(source.pick(3, np.random.default_rng(1)), (200, 30, 35))[:4] == b"\x89PNG"
