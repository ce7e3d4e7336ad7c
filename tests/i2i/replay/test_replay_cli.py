"""Bad input to ``i2i eval replay`` stops before anything is built, with one line naming the problem;
the command line turns its options into the typed ``ReplayConfig`` and nothing else."""
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from i2i.app.cli import main
from i2i.app.replay.cli import config_from_argv
from i2i.app.replay.config import ReplayConfig
from i2i.core.io import write_events_by_day, write_table
from i2i.core.schemas import NOTES, conform

from .test_scoring import tables


@pytest.fixture
def data(tmp_path):
    notes, events = tables()
    missing = [field for field in NOTES if field.name not in notes.column_names]  # text and image columns: null
    notes = conform(pa.table({**{f.name: pa.nulls(notes.num_rows, f.type) for f in missing},
                              **{name: notes.column(name) for name in notes.column_names}}), "notes")
    write_table(notes, tmp_path / "data" / "notes")
    write_events_by_day(events, tmp_path / "data" / "events")
    (tmp_path / "unknown_key.json").write_text(json.dumps({"train": {"stepz": 3}}))
    return tmp_path / "data"


@pytest.mark.parametrize("args, message", [
    (["--day", "2026-11-05", "--data", "{tmp}/nowhere"], "has no notes table"),
    (["--day", "2026-10-01"], "no events before 2026-10-01"),
    (["--day", "2026-11-20"], "no clicks on 2026-11-20"),
    (["--day", "2026-11-05", "--channels", "trained,bogus"], "unknown ['bogus']"),
    (["--day", "2026-11-05", "--deletes", "{tmp}/missing.txt"], "deletes not found"),
    (["--day", "2026-11-05", "--delete-random", "99"], "only 4 notes before"),
    (["--day", "2026-11-05", "--delete-random", "-1"], "argument --delete-random: must be a non-negative integer"),
    (["--day", "2026-11-05", "--span", "0"], "argument --span: must be a positive integer"),
    (["--day", "05/11/2026"], "argument --day: must be a day as YYYY-MM-DD"),
    (["--day", "2026-11-05", "--steps", "0"], "argument --steps: must be a positive integer"),
    (["--day", "2026-11-05", "--batch-size", "1"], "argument --batch-size: must be at least 2"),
    (["--day", "2026-11-05", "--train-config", "{tmp}/missing.json"], "missing.json: no such file"),
    (["--day", "2026-11-05", "--train-config", "{tmp}/unknown_key.json"],
     "the training recipe: unknown config key(s) stepz in train"),
    (["--day", "2026-11-05", "--checkpoint", "{tmp}"], "is not a checkpoint directory (no meta.json)"),
    (["--day", "2026-11-05", "--backbone", "huge"], "argument --backbone: invalid choice"),
])
def test_bad_input_exits_2_with_a_reason(data, tmp_path, capsys, args, message):
    argv = ["eval", "replay", "--data", str(data), "--out", str(tmp_path / "out")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_options_become_the_typed_config():
    config = config_from_argv(["--data", "d", "--day", "2026-11-21", "--channels", "oracle,trained",
                               "--train-config", "r.json", "--llm-layers", "3", "--json", "t.json"])
    assert config.day == dt.date(2026, 11, 21) and config.data == Path("d")
    assert config.channels == ("trained", "oracle")  # table order
    assert config.json_path == Path("t.json") and config.command.startswith("i2i eval replay --data d")
    # the recipe decides steps and batch size unless they are given: only given options reach the job
    job = config.train_job("notes", "pairs", "out")
    assert (job.steps, job.batch_size, job.llm_layers, job.config) == (None, None, 3, "r.json")
    assert (job.variant, job.backbone) == ("notellm2", "offline")
    given = config_from_argv(["--data", "d", "--day", "2026-11-21", "--steps", "7", "--batch-size", "4"])
    assert (given.train_job("n", "p", "o").steps, given.train_job("n", "p", "o").batch_size) == (7, 4)
    # defaults of the command line are the config's own
    plain = config_from_argv(["--data", "d", "--day", "2026-11-21"])
    assert plain == ReplayConfig(Path("d"), dt.date(2026, 11, 21), command=plain.command)


def test_the_recipe_without_options_is_the_presets(data, tmp_path):
    """No --steps/--batch-size: training runs the backbone's preset (cpu_offline)."""
    from embedding.train_cli import build_run_config

    run = build_run_config(ReplayConfig(data, dt.date(2026, 11, 5)).train_job("n", "p", "o"))
    recipe = json.loads((Path(__file__).resolve().parents[3] / "embedding/configs/cpu_offline.json").read_text())
    assert (run.train.steps, run.train.batch_size) == (recipe["train"]["steps"], recipe["train"]["batch_size"])
    assert run.model.llm.num_layers == recipe["model"]["llm"]["num_layers"]


def test_a_replay_into_another_replays_output_is_refused(data, tmp_path, capsys):
    argv = ["eval", "replay", "--data", str(data), "--out", str(tmp_path / "out"), "--day", "2026-11-05",
            "--channels", "cooccur,oracle", "--bootstrap", "20"]
    assert main(argv) == 0
    written = (tmp_path / "out" / "work" / "_split.done.json").read_text()
    capsys.readouterr()
    assert main(argv + ["--delete-random", "1"]) == 2  # another day D catalogue: not mixed into the first
    err = capsys.readouterr().err
    assert "holds a split made from other inputs (deleted, deleted_sha256 differ)" in err and "another --out" in err
    assert (tmp_path / "out" / "work" / "_split.done.json").read_text() == written
    assert main(argv) == 0  # the same replay again is fine


def test_a_second_replay_into_a_locked_output_is_told_to_retry(data, tmp_path, capsys):
    from i2i.core.locks import exclusive_lock

    argv = ["eval", "replay", "--data", str(data), "--out", str(tmp_path / "out"), "--day", "2026-11-05",
            "--channels", "oracle", "--bootstrap", "20"]
    with exclusive_lock(tmp_path / "out" / ".lock", wait=False, note="4242\n"):
        assert main(argv) == 75
    err = capsys.readouterr().err
    assert "another replay writes into" in err and "(pid 4242); retry later" in err
    assert main(argv) == 0


def test_tables_that_do_not_fit_the_contract_are_named(data, tmp_path, capsys):
    from i2i.core.io import read_table

    notes = read_table(data / "notes")
    column = notes.schema.get_field_index("published_at")
    bad_notes = notes.set_column(column, "published_at", pa.array([str(t) for t in notes.column(column).to_pylist()]))
    write_table(bad_notes, tmp_path / "bad" / "notes")
    write_table(read_table(data / "events").drop_columns(["ts"]), tmp_path / "bad" / "events")
    argv = ["eval", "replay", "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "out"), "--day", "2026-11-05"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "notes does not fit the notes contract: notes: published_at: type string" in err
    write_table(notes, tmp_path / "bad" / "notes")
    assert main(argv) == 2
    assert "events does not fit the events contract: events: ts: missing column" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
