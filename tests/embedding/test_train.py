import json

import pyarrow as pa
import pytest
import torch

from embedding.checkpoint import load_encoder, read_meta
from embedding.config import TrainConfig
from embedding.inputs import NoteProcessor
from embedding.testing import make_notes, tiny_model
from embedding.train import batch_loss, lr_lambda, make_optimizer
from i2i.app.cli import main as i2i
from i2i.core.io import read_table, write_table


def test_a_few_steps_lower_the_loss_on_a_tiny_batch():
    model, tokenizer = tiny_model("notellm2", seed=0)
    notes = make_notes(8, groups=4)  # notes i and i+4 share a theme: pairs (i, i+4)
    batch = NoteProcessor(model.config, tokenizer).prepare(notes)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-3))
    model.train()
    losses = []
    for _ in range(8):
        loss = batch_loss(model, model(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.7


def test_schedule_warms_up_then_decays_linearly():
    factor = lr_lambda(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5) and factor(100) == 0.0


def test_train_command_writes_a_checkpoint_and_resumes(tiny_dataset, tmp_path, capsys):
    notes, pairs = tiny_dataset
    out = tmp_path / "ckpt"
    args = ["train", "--notes", str(notes), "--pairs", str(pairs), "--out", str(out), "--backbone", "tiny",
            "--variant", "notellm2", "--steps", "4", "--batch-size", "4", "--log-every", "2", "--quiet"]
    assert i2i(args) == 0
    printed = capsys.readouterr().out
    meta = read_meta(out)
    assert f"model_version {meta['model_version']}" in printed and "trained notellm2 for 4 steps" in printed
    assert meta["step"] == 4 and [h["step"] for h in meta["history"]] == [2, 4]
    assert meta["history"][-1]["val_loss"] is not None
    encoder = load_encoder(str(out), device="cpu")
    assert encoder.model_version == meta["model_version"]
    assert encoder.encode(make_notes(3)).shape == (3, 32)

    resume_args = list(args)
    resume_args[resume_args.index("--steps") + 1] = "6"
    assert i2i(resume_args + ["--resume"]) == 0
    resumed = read_meta(out)
    assert resumed["step"] == 6 and [h["step"] for h in resumed["history"]] == [2, 4, 6]
    assert resumed["model_version"] != meta["model_version"]


def test_unusable_pairs_are_counted_and_kept_as_dead_letters(tiny_dataset, tmp_path, capsys):
    notes, pairs = tiny_dataset
    table = read_table(pairs)
    extra = pa.Table.from_pylist([{"query_note_id": "ghost", "target_note_id": "n0001", "score": 1.0,
                                   "split": "train"}], schema=table.schema)
    write_table(pa.concat_tables([table, extra]), tmp_path / "pairs")
    out = tmp_path / "ckpt"
    assert i2i(["train", "--notes", str(notes), "--pairs", str(tmp_path / "pairs"), "--out", str(out),
                "--backbone", "tiny", "--variant", "text_only", "--steps", "2", "--quiet"]) == 0
    assert '"query note not in the notes table": 1' in capsys.readouterr().out
    dead = read_table(out / "dead_letter").to_pylist()
    assert len(dead) == 1 and "ghost" in dead[0]["raw"]


def test_bad_input_exits_2_with_a_reason(tiny_dataset, tmp_path, capsys):
    notes, pairs = tiny_dataset
    base = ["train", "--notes", str(notes), "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--backbone", "tiny"]
    assert i2i(["train", "--notes", str(tmp_path / "missing"), *base[3:]]) == 2
    assert "table not found" in capsys.readouterr().err
    assert i2i(base + ["--batch-size", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"model": {"vision": {"colour": 1}}}))
    assert i2i(base + ["--config", str(bad_config)]) == 2
    assert "unknown config key(s) colour in model.vision" in capsys.readouterr().err
    assert i2i(["train", "--notes", str(notes), "--pairs", str(notes), "--out", str(tmp_path / "o"),
                "--backbone", "tiny"]) == 2
    assert "pairs table" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        i2i(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--backbone" in out and "--variant" in out and "--llm-layers" in out


def test_resume_restores_weights_optimizer_and_scheduler(tiny_dataset, tmp_path):
    """4 steps, save, resume for 2 more: the same weights, optimizer and scheduler as 6 straight steps."""
    from embedding.checkpoint import load_model, load_training_state

    notes, pairs = tiny_dataset
    common = ["train", "--notes", str(notes), "--pairs", str(pairs), "--backbone", "tiny", "--variant", "notellm2",
              "--steps", "6", "--batch-size", "4", "--log-every", "2", "--quiet", "--device", "cpu"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert i2i(common + ["--out", str(straight)]) == 0
    assert i2i(common + ["--out", str(resumed), "--stop-after", "4"]) == 0
    halfway = load_training_state(resumed)
    assert halfway["step"] == 4 and halfway["scheduler"]["last_epoch"] == 4
    assert i2i(common + ["--out", str(resumed), "--resume"]) == 0

    weights = {name: tensor for name, tensor in load_model(str(straight))[0].state_dict().items()}
    for name, tensor in load_model(str(resumed))[0].state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
    expected, got = load_training_state(straight), load_training_state(resumed)
    assert got["step"] == expected["step"] == 6
    assert got["scheduler"]["last_epoch"] == expected["scheduler"]["last_epoch"] == 6
    assert got["scheduler"]["_last_lr"] == pytest.approx(expected["scheduler"]["_last_lr"])
    assert got["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert got["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for key, state in expected["optimizer"]["state"].items():
        for field, value in state.items():  # step, exp_avg, exp_avg_sq of AdamW
            torch.testing.assert_close(got["optimizer"]["state"][key][field], value, rtol=0, atol=1e-6)
