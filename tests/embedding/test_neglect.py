"""The visual-neglect diagnostic: shares against a hand-built attention pattern, and the command."""
import json

import numpy as np
import pytest
import torch

from embedding.inputs import NoteProcessor
from embedding.neglect import attention_shares, measure_flow, position_sets, relative, saliency_sums
from embedding.testing import make_notes, make_tiny_checkpoint, tiny_model
from i2i.app.cli import main as i2i


def test_uniform_attention_gives_the_share_of_image_positions():
    """With zero query projections every allowed key gets the same weight: c's share on the image
    is the number of image positions over the number of real positions up to c."""
    model, tokenizer = tiny_model("basic")
    for layer in model.llm.layers:
        torch.nn.init.zeros_(layer.self_attn.q_proj.weight)
    model.llm.set_attn_implementation("eager")
    notes = make_notes(4, groups=2)
    notes[1]["content"] = "a much longer body " * 5  # different lengths: left padding must not count
    batch = NoteProcessor(model.config, tokenizer).prepare(notes)
    model.eval()
    with torch.no_grad():
        out = model(batch, output_attentions=True)
    shares = attention_shares(out.attentions, position_sets(batch))
    real = batch.attention_mask.sum(dim=1).float()
    image = batch.image_mask.sum(dim=1).float()
    expected_image = float((image / real).mean())
    expected_self = float((1 / real).mean())
    assert shares.shape == (len(model.llm.layers), 3)
    assert np.allclose(shares[:, 0], expected_image, atol=1e-5)
    assert np.allclose(shares[:, 2], expected_self, atol=1e-5)
    assert np.allclose(shares.sum(axis=1), 1.0, atol=1e-5)


def test_micl_counts_the_visual_compressed_word_as_image():
    model, tokenizer = tiny_model("notellm2")
    batch = NoteProcessor(model.config, tokenizer).prepare(make_notes(2))
    sets = position_sets(batch)
    for row in range(2):
        index = int(batch.img_emb_index[row])
        assert sets.visual[row, index] and sets.visual[row, index - 1] and not sets.text[row, index]
        assert int(sets.visual[row].sum()) == model.config.connector.num_queries + 2
        assert not sets.text[row, -1] and not (sets.visual[row] & sets.text[row]).any()


def test_saliency_parts_on_a_hand_built_matrix():
    # one note, T = 4: position 0 image, 1-2 text, 3 = c; one head, one layer
    real = torch.ones(1, 4, dtype=torch.bool)
    visual = torch.tensor([[True, False, False, False]])
    text = torch.tensor([[False, True, True, False]])
    from embedding.neglect import PositionSets

    sets = PositionSets(visual, text, real)
    attention = torch.tril(torch.ones(1, 1, 4, 4))
    grad = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    sums = saliency_sums((attention,), (grad,), sets)[0]
    # I = |A * G|: row 3 is (12, 13, 14, 15); P_v = {(3,0)}, P_t = {(3,1), (3,2)}; P_o = (1,0), (2,0), (2,1)
    assert sums.tolist() == [[12.0, 1.0], [27.0, 2.0], [4.0 + 8.0 + 9.0, 3.0]]
    shares = relative(sums[None])[0]
    assert shares == pytest.approx(np.array([12, 13.5, 7]) / 32.5)


def test_measured_shares_sum_to_one_per_layer(tiny_dataset):
    from embedding.train import load_notes, load_pairs

    notes_path, pairs_path = tiny_dataset
    notes = load_notes(str(notes_path))
    train, _ = load_pairs(str(pairs_path), set(notes))
    model, tokenizer = tiny_model("notellm2")
    attention, saliency, count = measure_flow(model, NoteProcessor(model.config, tokenizer), notes,
                                              [train.pairs[:2], train.pairs[2:4]], torch.device("cpu"))
    assert count == 8
    assert np.allclose(attention.sum(axis=1), 1.0, atol=1e-5) and np.allclose(saliency.sum(axis=1), 1.0)
    assert (attention >= -1e-6).all() and (saliency >= 0).all() and attention[:, 0].min() > 0


def test_diagnose_command_compares_checkpoints(tiny_dataset, tmp_path, capsys):
    notes_path, pairs_path = tiny_dataset
    basic = make_tiny_checkpoint(str(tmp_path / "basic"), variant="basic")
    notellm2 = make_tiny_checkpoint(str(tmp_path / "notellm2"), variant="notellm2")
    out = tmp_path / "diag"
    assert i2i(["diagnose", "--checkpoint", basic, "--checkpoint", notellm2, "--notes", str(notes_path),
                "--pairs", str(pairs_path), "--split", "train", "--flow-notes", "8", "--batch-size", "2",
                "--ks", "1,5", "--out", str(out)]) == 0
    data = json.loads((out / "neglect.json").read_text())
    assert set(data["checkpoints"]) == {"basic", "notellm2"}
    for result in data["checkpoints"].values():
        assert {"whole note", "image alone", "text alone"} <= set(result["recall"])
        for layer in result["attention_shares"]:
            assert sum(layer.values()) == pytest.approx(1.0, abs=1e-5)
    markdown = (out / "neglect.md").read_text()
    assert "| basic |" in markdown and "| notellm2 |" in markdown and "S_v" in markdown
    assert "image-alone R@5" in capsys.readouterr().out
    assert i2i(["diagnose", "--checkpoint", basic, "--notes", str(notes_path), "--pairs", str(pairs_path),
                "--split", "nosuch", "--out", str(out)]) == 2
