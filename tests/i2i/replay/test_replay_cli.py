"""Bad input to ``i2i eval replay`` stops before anything is built, with one line naming the problem."""
import pytest

from i2i.app.cli import main
from i2i.core.io import write_events_by_day, write_table

from .test_scoring import tables


@pytest.fixture
def data(tmp_path):
    notes, events = tables()
    write_table(notes, tmp_path / "data" / "notes")
    write_events_by_day(events, tmp_path / "data" / "events")
    return tmp_path / "data"


@pytest.mark.parametrize("args, message", [
    (["--day", "2026-11-05", "--data", "{tmp}/nowhere"], "has no notes table"),
    (["--day", "2026-10-01"], "no events before 2026-10-01"),
    (["--day", "2026-11-20"], "no clicks on 2026-11-20"),
    (["--day", "2026-11-05", "--channels", "trained,bogus"], "unknown ['bogus']"),
    (["--day", "2026-11-05", "--deletes", "{tmp}/missing.txt"], "deletes not found"),
    (["--day", "2026-11-05", "--delete-random", "99"], "only 4 notes before"),
    (["--day", "2026-11-05", "--span", "0"], "at least one day"),
    (["--day", "05/11/2026"], "invalid fromisoformat value"),
])
def test_bad_input_exits_2_with_a_reason(data, tmp_path, capsys, args, message):
    argv = ["eval", "replay", "--data", str(data), "--out", str(tmp_path / "out")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
