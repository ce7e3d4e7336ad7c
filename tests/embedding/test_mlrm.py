import pytest
import torch

from embedding.config import VARIANTS
from embedding.inputs import NoteProcessor
from embedding.testing import make_notes, png_bytes, tiny_model
from embedding.train import batch_loss


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_normalised_embeddings(variant):
    model, tokenizer = tiny_model(variant)
    batch = NoteProcessor(model.config, tokenizer).prepare(make_notes(4))
    out = model(batch)
    assert out.multimodal.shape == (4, model.config.embed_dim) and out.multimodal.dtype == torch.float32
    assert torch.allclose(out.multimodal.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert (out.visual is not None) == (variant in ("micl", "notellm2"))
    assert (model.connector is not None) == (variant in ("basic", "micl", "late_fusion", "notellm2"))
    assert (model.gate is not None) == (variant in ("late_fusion", "notellm2", "only_late_fusion"))


@pytest.mark.parametrize("variant", ["micl", "notellm2"])
def test_micl_visual_embedding_ignores_the_text(variant):
    model, tokenizer = tiny_model(variant)
    processor = NoteProcessor(model.config, tokenizer)
    note = make_notes(1)[0]
    other_text = dict(note, title="completely different words", content="nothing alike at all " * 5)
    model.eval()
    with torch.no_grad():
        a, b = model(processor.prepare([note])), model(processor.prepare([other_text]))
    assert torch.allclose(a.visual, b.visual, atol=1e-5)
    assert not torch.allclose(a.multimodal, b.multimodal, atol=1e-3)


@pytest.mark.parametrize("variant,image_matters", [("only_late_fusion", True), ("basic", True), ("text_only", False)])
def test_image_reaches_the_embedding_only_where_the_variant_uses_it(variant, image_matters):
    model, tokenizer = tiny_model(variant)
    processor = NoteProcessor(model.config, tokenizer)
    note = make_notes(1)[0]
    recoloured = dict(note, image=png_bytes((0, 250, 250)))
    model.eval()
    with torch.no_grad():
        a, b = model(processor.prepare([note])).multimodal, model(processor.prepare([recoloured])).multimodal
    assert (not torch.allclose(a, b, atol=1e-5)) == image_matters


def test_frozen_vision_encoder_gets_no_gradient_while_the_rest_learns():
    model, tokenizer = tiny_model("notellm2")
    model.train()
    batch = NoteProcessor(model.config, tokenizer).prepare(make_notes(4))
    batch_loss(model, model(batch)).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.vision.parameters())
    assert model.connector.queries.grad is not None and model.connector.queries.grad.abs().sum() > 0
    assert model.gate.gate.weight.grad.abs().sum() > 0
    assert model.llm.get_input_embeddings().weight.grad.abs().sum() > 0
    assert model.tau.grad is not None
    assert not model.vision.training  # batch-norm/dropout stay in inference mode while training


def test_padding_does_not_change_a_notes_embedding():
    model, tokenizer = tiny_model("notellm2")
    processor = NoteProcessor(model.config, tokenizer)
    notes = make_notes(3)
    notes[1]["content"] = "a much longer note " * 12
    model.eval()
    with torch.no_grad():
        together = model(processor.prepare(notes)).multimodal
        alone = model(processor.prepare(notes[:1])).multimodal
    assert torch.allclose(together[0], alone[0], atol=1e-5)


def test_missing_and_broken_images_embed_as_a_blank_image():
    model, tokenizer = tiny_model("notellm2")
    processor = NoteProcessor(model.config, tokenizer)
    notes = make_notes(3)
    notes[0]["image"], notes[1]["image"] = None, b"\x89PNG not really"
    batch = processor.prepare(notes)
    assert batch.image_ok.tolist() == [False, False, True]
    assert batch.pixels[:2].abs().sum() == 0
    model.eval()
    with torch.no_grad():
        out = model(batch).multimodal
    assert torch.isfinite(out).all()
