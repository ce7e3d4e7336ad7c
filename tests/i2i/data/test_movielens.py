import pyarrow.compute as pc
import recbole  # noqa: F401,E402 - part of requirements-models.txt: missing is a failure, not a skip

from i2i.app.cli import main
from i2i.core.io import read_table
from i2i.core.schemas import validate


def test_movielens_converts_to_conforming_notes_and_events(tmp_path):
    assert main(["data", "movielens", "--out", str(tmp_path)]) == 0
    notes, events = read_table(tmp_path / "notes"), read_table(tmp_path / "events")
    assert notes.num_rows == 1682 and events.num_rows == 100000
    assert validate(notes, "notes").ok and validate(events, "events").ok
    assert notes.column("image").null_count == 1682
    toy_story = notes.filter(pc.equal(notes.column("note_id"), "m1")).to_pylist()[0]
    assert toy_story["title"] == "Toy Story"
    assert toy_story["topics"] == ["Animation", "Children's", "Comedy"]
    assert "1995" in toy_story["content"]
    clicks = pc.sum(pc.equal(events.column("action"), "click")).as_py()
    assert clicks == 55375  # ratings of 4 or 5 in MovieLens-100k
