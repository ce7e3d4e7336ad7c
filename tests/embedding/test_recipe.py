"""The CPU recipe's training mechanics: parameter groups, new-token rows, cached vision features,
validation over every val pair."""
import random

import pytest
import torch

from embedding.backbones import load_tokenizer
from embedding.batching import one_epoch
from embedding.config import TrainConfig, model_config_from_dict, preset
from embedding.features import FeatureCache
from embedding.inputs import NoteProcessor
from embedding.mlrm import MLRM
from embedding.prompts import IMG_EMB_TOKEN
from embedding.testing import make_notes, tiny_model
from embedding.train import batch_loss, load_notes, load_pairs, make_optimizer, validation_loss


def frozen_table_model(seed: int = 0) -> tuple[MLRM, object]:
    data = preset("tiny")["model"]
    data["llm"].update({"train_embeddings": False, "train_new_tokens": True})
    config = model_config_from_dict(data)
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(config.llm)
    return MLRM(config, len(tokenizer), pretrained=True), tokenizer


def test_temperature_has_its_own_undecayed_group_and_biases_norms_are_not_decayed():
    model, _ = tiny_model("notellm2")
    optimizer = make_optimizer(model, TrainConfig(lr=3e-4, head_lr=1e-3, tau_lr=0.05, weight_decay=0.1))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert [p is model.tau for p in groups["tau"]["params"]] == [True]
    assert groups["tau"]["lr"] == 0.05 and groups["tau"]["weight_decay"] == 0.0
    decayed = {id(p) for name in ("llm", "new") for p in groups[name]["params"]}
    undecayed = {id(p) for name in ("llm_no_decay", "new_no_decay") for p in groups[name]["params"]}
    norms = [m.weight for m in model.modules() if "Norm" in type(m).__name__]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias") and p.requires_grad]
    assert norms and biases
    assert all(id(p) in undecayed and id(p) not in decayed for p in norms + biases)
    assert groups["llm"]["lr"] == 3e-4 and groups["llm"]["weight_decay"] == 0.1
    assert id(model.head.weight) in decayed
    counted = sum(len(g["params"]) for g in optimizer.param_groups)
    assert counted == sum(1 for p in model.parameters() if p.requires_grad)


def test_one_step_moves_tau_by_its_own_rate():
    model, tokenizer = tiny_model("basic")
    batch = NoteProcessor(model.config, tokenizer).prepare(make_notes(8, groups=4))
    before = float(model.tau.detach())
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4, head_lr=1e-4, tau_lr=0.05))
    batch_loss(model, model(batch)).backward()
    optimizer.step()
    assert abs(float(model.tau.detach()) - before) == pytest.approx(0.05, rel=0.02)  # Adam's first step is ~lr


def test_new_token_rows_start_at_the_mean_and_train_while_the_table_is_frozen():
    model, tokenizer = frozen_table_model()
    table = model.llm.get_input_embeddings().weight
    first = model.first_new_token
    assert tokenizer.convert_tokens_to_ids(IMG_EMB_TOKEN) >= first
    mean = table[:first].mean(dim=0)
    assert torch.allclose(table[first], mean) and torch.allclose(model.new_tokens[1], mean)
    batch = NoteProcessor(model.config, tokenizer).prepare(make_notes(8, groups=4))
    batch_loss(model, model(batch)).backward()
    assert table.grad is None
    img_emb_row = tokenizer.convert_tokens_to_ids(IMG_EMB_TOKEN) - first
    assert model.new_tokens.grad[img_emb_row].abs().sum() > 0
    with torch.no_grad():
        model.new_tokens[img_emb_row] += 1.0
    ids = torch.tensor([[tokenizer.convert_tokens_to_ids(IMG_EMB_TOKEN), 5]])
    embeds = model.token_embeddings(ids)
    assert torch.allclose(embeds[0, 0], mean + 1.0) and torch.allclose(embeds[0, 1], table[5])


def test_cached_vision_features_give_the_same_embeddings_and_loss(tiny_dataset):
    notes_path, pairs_path = tiny_dataset
    model, tokenizer = tiny_model("notellm2")
    model.eval()
    processor = NoteProcessor(model.config, tokenizer)
    notes = load_notes(str(notes_path))
    ids = sorted(notes)[:8]
    cache = FeatureCache(model, processor, notes, torch.device("cpu"), chunk=5)
    cache.ensure(ids[:3])
    assert len(cache) == 3  # computed when asked for, not for every note up front
    direct = model(processor.prepare([notes[n] for n in ids]))
    shuffled = ids[::-1]  # rows must follow the batch's order, whatever order they were cached in
    cached_batch = cache.attach(processor.prepare([notes[n] for n in shuffled], images=False), shuffled)
    assert cached_batch.pixels is None and len(cache) == 8
    cached = model(cached_batch)
    assert torch.allclose(direct.multimodal.flip(0), cached.multimodal, atol=1e-6)
    assert torch.allclose(direct.visual.flip(0), cached.visual, atol=1e-6)
    cache.attach(processor.prepare([notes[n] for n in ids[:2]], images=False), ids[:2])
    assert len(cache) == 8  # a note is encoded once


def test_validation_covers_every_full_batch_of_val_pairs(tiny_dataset):
    notes_path, pairs_path = tiny_dataset
    model, tokenizer = tiny_model("basic")
    processor = NoteProcessor(model.config, tokenizer)
    notes = load_notes(str(notes_path))
    _, val = load_pairs(str(pairs_path), set(notes))
    cfg = TrainConfig(batch_size=2, val_batches=0)
    batches = list(one_epoch(val.pairs, 2, random.Random(12345), allow_partial=False))
    assert len(batches) >= 2
    model.eval()
    expected = []
    with torch.no_grad():
        for batch in batches:
            ids = [q for q, _ in batch] + [t for _, t in batch]
            expected.append(float(batch_loss(model, model(processor.prepare([notes[n] for n in ids])))))
    assert validation_loss(model, processor, val.pairs, notes, cfg, torch.device("cpu")) == \
        pytest.approx(sum(expected) / len(expected), rel=1e-5)
    first = validation_loss(model, processor, val.pairs, notes, TrainConfig(batch_size=2, val_batches=1),
                            torch.device("cpu"))
    assert first == pytest.approx(expected[0], rel=1e-5)


def test_epochs_set_the_steps_and_early_stopping_keeps_the_best_weights(tmp_path, capsys):
    import json as _json
    import math as _math

    from embedding.checkpoint import load_encoder, read_meta
    from embedding.testing import write_dataset
    from i2i.app.cli import main as i2i

    notes_path, pairs_path = write_dataset(tmp_path / "data", count=32, groups=8)
    notes = load_notes(str(notes_path))
    train_set, _ = load_pairs(str(pairs_path), set(notes))
    config = tmp_path / "early.json"
    config.write_text(_json.dumps({"train": {"epochs": 2, "patience": 2, "min_delta": 100.0, "val_every": 1}}))
    out = tmp_path / "ckpt"
    args = ["train", "--notes", str(notes_path), "--pairs", str(pairs_path), "--out", str(out), "--backbone", "tiny",
            "--config", str(config), "--batch-size", "2", "--log-every", "1", "--quiet"]
    assert i2i(args) == 0
    meta = read_meta(out)
    planned = _math.ceil(2 * len(train_set.pairs) / 2)
    assert meta["train_config"]["steps"] == planned and planned > 3
    # min_delta 100: no validation after the first counts as an improvement, so two more stop it
    early = meta["early_stopping"]
    assert early["stopped_at"] == 3 and meta["step"] == 3 and early["restored_best"]
    measured = {r["step"]: r["val_loss"] for r in meta["diagnostics"] if r["step"] > 0}
    assert early["best_step"] == min(measured, key=measured.get)
    assert early["best_val_loss"] == pytest.approx(measured[early["best_step"]])
    # the saved weights are the best ones: their val loss is the best one
    encoder = load_encoder(str(out), device="cpu")
    _, val = load_pairs(str(pairs_path), set(notes))
    val_batches = preset("tiny")["train"]["val_batches"]
    again = validation_loss(encoder.model, encoder.processor, val.pairs, notes,
                            TrainConfig(batch_size=2, val_batches=val_batches), torch.device("cpu"))
    assert again == pytest.approx(early["best_val_loss"], rel=1e-4)


def test_gpu_full_training_options_run_on_cpu_with_a_tiny_model(tmp_path):
    """gpu_full's train section (epochs, early stopping, its rates) on tiny backbones."""
    import json as _json

    from embedding.checkpoint import read_meta
    from embedding.config import preset
    from embedding.testing import write_dataset
    from i2i.app.cli import main as i2i

    notes_path, pairs_path = write_dataset(tmp_path / "data", count=32, groups=8)
    train_section = dict(preset("gpu_full")["train"], batch_size=2, num_workers=0, val_every=4, epochs=1)
    config = tmp_path / "gpu_train.json"
    config.write_text(_json.dumps({"train": train_section}))
    out = tmp_path / "ckpt"
    assert i2i(["train", "--notes", str(notes_path), "--pairs", str(pairs_path), "--out", str(out),
                "--backbone", "tiny", "--config", str(config), "--device", "cpu", "--quiet"]) == 0
    meta = read_meta(out)
    assert meta["train_config"]["epochs"] == 1 and meta["train_config"]["steps"] < 2000
    assert meta["early_stopping"]["patience"] == preset("gpu_full")["train"]["patience"]
    assert meta["early_stopping"]["best_val_loss"] is not None
