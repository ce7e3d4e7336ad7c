"""The scheduled daily run over real stages: idempotence, the lock, failures and exit codes."""
import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pytest

from embedding.testing import make_tiny_checkpoint
from i2i.app.daily import DailyConfig, DailyRun, main, run_lock
from i2i.app.data.fashion_notes import FashionConfig, generate
from i2i.core.errors import InputError
from i2i.core.io import read_table, write_events_by_day, write_table
from i2i.testing.serving import free_port

DAY1, DAY2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Data, a tiny checkpoint and a config file, as an operator would lay them out."""
    root = tmp_path_factory.mktemp("site")
    world = generate(FashionConfig(notes=160, users=60, days=2, seed=3))
    write_table(world.notes, root / "data" / "notes")
    write_events_by_day(world.events, root / "data" / "events")
    make_tiny_checkpoint(str(root / "model"))
    write_table(pa.table({"note_id": world.notes.column("note_id").to_pylist()[:3]}),
                root / "data" / "deletes" / f"dt={DAY2}")
    return root


def write_config(root, name="daily.toml", index_dir="index", extra=""):
    path = root / name
    path.write_text(
        'events = "data/events"\nnotes = "data/notes"\nruns = "runs"\ncheckpoint = "model"\n'
        f'table = "parquet:tables/embeddings"\nindex_dir = "{index_dir}"\ndeletes = "data/deletes/dt={{date}}"\n'
        + extra + '[embed]\nprogress = false\n'
    )
    return path


def test_two_days_then_idempotent_rerun(site, capsys):
    config = write_config(site)
    assert main(["--date", str(DAY1), "--config", str(config)]) == 0
    first = (site / "index" / "CURRENT").read_text().strip()
    assert read_table(site / "runs" / str(DAY1) / "cooccur" / "related").num_rows > 0
    assert read_table(site / "runs" / str(DAY1) / "pairs").num_rows > 0

    capsys.readouterr()
    assert main(["--date", str(DAY1), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (done)") == 4
    assert (site / "index" / "CURRENT").read_text().strip() == first  # nothing republished

    assert main(["--date", str(DAY2), "--config", str(config)]) == 0
    second = (site / "index" / "CURRENT").read_text().strip()
    assert second != first
    manifest = (site / "index" / "versions" / second / "manifest.json").read_text()
    assert f'"parent": "{first}"' in manifest
    deleted = read_table(site / "data" / "deletes" / f"dt={DAY2}").column("note_id").to_pylist()
    assert_deletes_applied(site / "index", deleted, day1_version=first)


def assert_deletes_applied(index_dir, deleted, day1_version):
    """The day's deletes were in the index the day before, and are gone from what CURRENT serves."""
    from index.store import IndexStore

    store = IndexStore(index_dir)
    assert all(note in store.load(day1_version, hold=False).ids for note in deleted)
    current = store.load(hold=False)
    assert not any(note in current.ids for note in deleted)
    assert set(deleted) <= current.contents.tombstones


def test_second_run_is_refused_while_the_lock_is_held(site):
    config = write_config(site)
    with run_lock(DailyConfig.load(config).runs):
        result = subprocess.run([sys.executable, "-m", "i2i.app.cli", "run", "--date", str(DAY1), "--config",
                                 str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 75
    assert "another i2i run holds" in result.stdout


def test_failed_stage_keeps_earlier_outputs_and_rerun_resumes(tmp_path, site):
    import shutil

    root = tmp_path / "site"
    shutil.copytree(site / "data", root / "data")
    shutil.copytree(site / "model", root / "model")
    (root / "blocked").write_text("a file where the index directory should be")
    broken = write_config(root, index_dir="blocked/index")
    assert main(["--date", str(DAY1), "--config", str(broken)]) == 1
    markers = sorted(p.stem for p in (root / "runs" / str(DAY1) / "_stages").iterdir())
    assert markers == ["cooccur", "embed", "pairs"]
    related = read_table(root / "runs" / str(DAY1) / "cooccur" / "related")

    fixed = write_config(root, name="fixed.toml")
    assert main(["--date", str(DAY1), "--config", str(fixed)]) == 0
    assert read_table(root / "runs" / str(DAY1) / "cooccur" / "related").equals(related)
    assert (root / "index" / "CURRENT").exists()


def test_bad_config_and_missing_partition_are_input_errors(tmp_path, site):
    bad = tmp_path / "bad.toml"
    bad.write_text('events = "x"\nsurprise = 1\n')
    with pytest.raises(InputError, match="unknown config key"):
        DailyConfig.load(bad)
    config = write_config(site, name="missing.toml")
    result = subprocess.run([sys.executable, "-m", "i2i.app.cli", "run", "--date", "2030-01-01", "--config",
                             str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no events partition for 2030-01-01" in result.stderr


def run_cli(config, date):
    return subprocess.run([sys.executable, "-m", "i2i.app.cli", "run", "--date", str(date), "--config", str(config)],
                          capture_output=True, text=True, timeout=600)


def test_unreachable_redis_table_is_temporary_and_exits_75(tmp_path, site):
    import shutil

    root = tmp_path / "site"
    shutil.copytree(site / "data", root / "data")
    shutil.copytree(site / "model", root / "model")
    config = write_config(root)
    config.write_text(config.read_text().replace("parquet:tables/embeddings", f"redis://127.0.0.1:{free_port()}/0"))
    result = run_cli(config, DAY1)
    assert result.returncode == 75, (result.stdout, result.stderr)
    assert "stage embed failed" in result.stdout and "unavailable" in result.stdout and "retry later" in result.stdout


def served_manifest(index_dir):
    from index.store import IndexStore

    store = IndexStore(index_dir)
    return store.manifest(store.current_version())


def test_two_days_with_retrain_serve_the_new_model(tmp_path, site):
    """With retrain = true each day trains a new model: the catalogue is embedded under it and the
    index is rebuilt from those embeddings, so CURRENT always holds the checkpoint's model version."""
    import shutil

    from embedding.checkpoint import read_meta

    root = tmp_path / "site"
    shutil.copytree(site / "data", root / "data")
    shutil.copytree(site / "model", root / "model")
    config = write_config(root, extra='retrain = true\n'
                                      '[train]\nbackbone = "tiny"\nsteps = 2\nbatch_size = 4\nquiet = true\n'
                                      'device = "cpu"\n')
    assert main(["--date", str(DAY1), "--config", str(config)]) == 0
    day1_model = read_meta(root / "model")["model_version"]
    day1 = served_manifest(root / "index")
    assert day1.model_version == day1_model and day1.operation == "build"

    assert main(["--date", str(DAY2), "--config", str(config)]) == 0
    day2_model = read_meta(root / "model")["model_version"]
    assert day2_model != day1_model  # a new model was trained on day 2's pairs
    day2 = served_manifest(root / "index")
    assert day2.model_version == day2_model  # CURRENT follows the checkpoint
    assert day2.operation == "rebuild" and day2.parent == day1.version
    notes = read_table(root / "data" / "notes").num_rows
    deleted = read_table(root / "data" / "deletes" / f"dt={DAY2}").column("note_id").to_pylist()
    assert day2.ntotal == notes - len(deleted)  # the whole catalogue under the new model, less the deletes
    assert_deletes_applied(root / "index", deleted, day1_version=day1.version)


@pytest.mark.parametrize("table, message", [
    ("[cooccur]\ntop_tt = 3\n", "unknown config key(s) top_tt in cooccur"),
    ("[index.build]\nfactroy = 'Flat'\n", "unknown config key(s) factroy in index.build"),
    ("[train]\nsteps = 'many'\n", "train.steps"),
    ("[pairs]\nout = 'elsewhere'\n", "[pairs]: out is set by the daily run"),
])
def test_a_stage_table_maps_to_its_typed_config_and_unknown_keys_are_named(tmp_path, table, message):
    config = write_config(tmp_path, extra="").read_text() + table
    (tmp_path / "stage.toml").write_text(config)
    with pytest.raises(InputError) as raised:
        DailyConfig.load(tmp_path / "stage.toml")
    assert message in str(raised.value) and "stage.toml" in str(raised.value)


def test_the_stage_tables_reach_the_typed_stage_configs(tmp_path):
    (tmp_path / "typed.toml").write_text(write_config(tmp_path).read_text()
                                         + "[cooccur]\ntop_t = 7\n[index]\nkeep = 2\n[index.build]\nnlist = 9\n")
    run = DailyRun(DailyConfig.load(tmp_path / "typed.toml"), DAY1)
    assert run.cooccur_job(partition=tmp_path).config.top_t == 7
    job = run.index_job("build")
    assert (job.operation, job.keep, job.build.nlist) == ("build", 2, 9)
    assert run.embed_job().progress is False
