from embedding.backbones import load_tokenizer
from embedding.config import LLMConfig, PromptConfig
from embedding.inputs import NoteProcessor
from embedding.prompts import PromptBuilder, note_fields_text, render_text
from embedding.testing import tiny_model

NOTE = {"note_id": "a", "title": "red dress", "topics": ["summer", "dress"], "content": "light and airy",
        "image": None}


def test_basic_prompt_is_the_papers():
    assert render_text(NOTE, "basic", PromptConfig()) == (
        "Note content: {'image': <IMG>, 'title': red dress, 'topic': summer, dress, "
        "'content': light and airy}. Compress this note into one word:")


def test_micl_prompt_is_the_papers():
    assert render_text(NOTE, "notellm2", PromptConfig()) == (
        "Note content: {'image': <IMG>}, Compress this note into one word: \"<IMG_EMB>\". "
        "Note content: {'title': red dress, 'topic': summer, dress, 'content': light and airy}. "
        "Compress this note into one word: \"")


def test_text_only_prompt_has_no_image():
    text = render_text(NOTE, "text_only", PromptConfig())
    assert "<IMG>" not in text and text.startswith("Note content: {'title': red dress")


def test_title_and_content_are_truncated_in_words():
    note = dict(NOTE, title=" ".join(f"t{i}" for i in range(30)), content=" ".join(f"c{i}" for i in range(100)))
    body = note_fields_text(note, PromptConfig())
    assert "t19," in body and "t20" not in body
    assert body.endswith("c79") and "c80" not in body


def test_ids_hold_lc_image_positions_and_img_emb():
    tokenizer = load_tokenizer(LLMConfig())
    builder = PromptBuilder(tokenizer, "notellm2", PromptConfig(), num_queries=5)
    prompt = builder.build(NOTE)
    assert prompt.ids[prompt.image_start:prompt.image_start + 5] == [builder.img_id] * 5
    assert prompt.ids.count(builder.img_id) == 5
    assert prompt.ids[prompt.img_emb_position] == builder.img_emb_id
    assert tokenizer.decode(prompt.ids[-3:]) == ": \""


def test_note_tokens_are_capped():
    tokenizer = load_tokenizer(LLMConfig())
    builder = PromptBuilder(tokenizer, "basic", PromptConfig(max_note_tokens=10), num_queries=2)
    long_note = dict(NOTE, content="word " * 70)
    short = builder.build(NOTE)
    capped = builder.build(long_note)
    assert len(builder.note_ids(long_note)) == 10
    assert len(capped.ids) <= len(short.ids) + 10
    assert builder.token_length(long_note) > 300  # the note's own length is not capped


def test_left_padding_puts_every_note_last_token_at_the_end():
    model, tokenizer = tiny_model("micl")
    processor = NoteProcessor(model.config, tokenizer)
    notes = [NOTE, dict(NOTE, content="much longer content " * 10)]
    batch = processor.prepare(notes)
    single = processor.prepare([NOTE])
    length = single.input_ids.shape[1]
    assert batch.input_ids.shape[1] > length
    assert batch.input_ids[0, -length:].tolist() == single.input_ids[0].tolist()
    assert batch.attention_mask[0].sum() == length and batch.attention_mask[1].all()
    assert batch.position_ids[0, -length:].tolist() == list(range(length))
    assert batch.image_mask.sum(dim=1).tolist() == [model.config.connector.num_queries] * 2
    rows = batch.input_ids.gather(1, batch.img_emb_index[:, None]).squeeze(1)
    assert rows.tolist() == [processor.prompts.img_emb_id] * 2
