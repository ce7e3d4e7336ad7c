"""Training diagnostics against hand-computed references, and their log and curves in a checkpoint."""
import json
import math

import pytest
import torch

from embedding.checkpoint import read_meta
from embedding.config import TrainConfig
from embedding.diagnostics import (
    Diagnostics,
    Embedded,
    fixed_batches,
    knn_accuracy,
    loss_of_batches,
    mean_pairwise_cosine,
    oracle_loss,
)
from embedding.inputs import NoteProcessor
from embedding.testing import tiny_model, write_dataset
from embedding.train import load_notes, load_pairs, validation_loss
from i2i.app.cli import main as i2i


def test_mean_pairwise_cosine_is_one_at_collapse_and_zero_for_orthogonal_notes():
    assert mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_cosine(x) == pytest.approx((0 + 2 * 2 ** -0.5) / 3)


def test_knn_accuracy_on_a_hand_built_case():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, 0.2], [0.0, 1.0], [0.1, 0.99], [0.2, 0.98]])
    assert knn_accuracy(x, list("aaabbb"), k=2) == 1.0
    assert knn_accuracy(x, list("abcdef"), k=2) == 0.0
    # note 2 is labelled b among a-neighbours: it is wrong, and it does not change the others' majority
    assert knn_accuracy(x, list("aabbbb"), k=2) == pytest.approx(4 / 6)


def test_oracle_loss_beats_chance_and_embedding_loss_equals_batched_validation(tmp_path):
    notes_path, pairs_path = write_dataset(tmp_path, count=32, groups=8, attributes=True)
    notes = load_notes(str(notes_path))
    _, val = load_pairs(str(pairs_path), set(notes))
    diagnostics = Diagnostics(val.pairs, notes, batch_size=2, notes_path=str(notes_path), probe_size=16, k=5)
    ref = diagnostics.reference()
    assert ref["chance_loss"] == pytest.approx(math.log(3))
    assert ref["oracle"] == "latent attributes" and ref["oracle_loss"] < 0.2 * ref["chance_loss"]
    model, tokenizer = tiny_model("notellm2")
    processor = NoteProcessor(model.config, tokenizer)
    measured = diagnostics.measure(model, processor, torch.device("cpu"))
    batched = validation_loss(model, processor, val.pairs, notes, TrainConfig(batch_size=2), torch.device("cpu"))
    assert measured["val_loss"] == pytest.approx(batched, rel=1e-4)
    assert 0.0 <= measured["val_R@5"] <= 1.0 and -1.0 <= measured["probe_cosine"] <= 1.0
    assert 0.0 <= measured["knn_category"] <= 1.0 and "knn_colour" in measured


def test_oracle_needs_every_note_and_says_so_when_absent(tiny_dataset):
    notes_path, pairs_path = tiny_dataset
    notes = load_notes(str(notes_path))
    _, val = load_pairs(str(pairs_path), set(notes))
    ref = Diagnostics(val.pairs, notes, 2, str(notes_path)).reference()
    assert ref["oracle_loss"] is None and "not available" in ref["oracle"]
    assert oracle_loss({"n0000": {"note_id": "n0000", "category": "x"}}, fixed_batches(val.pairs, 2)) is None


def test_loss_of_batches_matches_eq1_on_perfect_embeddings():
    ids = ["a", "b", "c", "d"]
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # a~c, b~d
    embedded = Embedded({n: i for i, n in enumerate(ids)}, vectors, None)
    tau = torch.tensor(1.0)
    loss = loss_of_batches(embedded, [[("a", "c"), ("b", "d")]], tau, 0.0)
    e = math.exp(1.0)
    assert loss == pytest.approx(-math.log(math.exp(e) / (math.exp(e) + 2.0)))


def test_training_writes_the_log_and_curves_with_reference_figures(tmp_path, capsys):
    notes_path, pairs_path = write_dataset(tmp_path / "data", count=32, groups=8, attributes=True)
    out = tmp_path / "ckpt"
    assert i2i(["train", "--notes", str(notes_path), "--pairs", str(pairs_path), "--out", str(out),
                "--backbone", "tiny", "--steps", "4", "--batch-size", "2", "--log-every", "2",
                "--val-every", "2", "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    reference = lines[0]["reference"]
    assert reference["oracle_loss"] is not None and reference["chance_loss"] == pytest.approx(math.log(3))
    records = lines[1:]
    assert [r["step"] for r in records] == [0, 2, 4]
    for record in records:
        assert {"val_loss", "val_R@100", "val_R@10", "probe_cosine", "knn_category", "knn_colour"} <= set(record)
    assert records[1]["loss"] is not None and records[-1]["val_loss"] == read_meta(out)["history"][-1]["val_loss"]
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_product_oracle_vectors_give_the_nested_levels_of_the_ranking_oracle():
    from embedding.diagnostics import oracle_vectors

    rows = [("a", "p1", "coat", "red", "chic"), ("b", "p1", "coat", "red", "chic"), ("c", "p2", "coat", "red", "chic"),
            ("d", "p3", "coat", "red", "boho"), ("e", "p4", "coat", "blue", "boho"), ("f", "p5", "bag", "blue", "chic")]
    attributes = {r[0]: dict(zip(("note_id", "product_id", "category", "colour", "style"), r)) for r in rows}
    vectors = oracle_vectors(attributes, [r[0] for r in rows])
    scores = (vectors @ vectors.T)[0].tolist()
    assert scores[1:5] == [4.0, 3.0, 2.0, 1.0]  # product > family > category+colour > category
