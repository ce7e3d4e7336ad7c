"""The embedding job as a real Beam pipeline (DirectRunner) with RunInference."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embedding.beam_embed import run_beam_embed
from embedding.checkpoint import load_encoder
from embedding.embed_job import EmbedJobConfig
from embedding.table import open_table
from embedding.testing import make_notes, make_tiny_checkpoint
from i2i.core.io import read_table, write_table
from i2i.core.schemas import NOTES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny"))


def test_pipeline_embeds_new_notes_and_dead_letters_bad_rows(tmp_path, checkpoint):
    notes = make_notes(14)
    notes[0]["image"] = b"\x89PNG broken"
    table_url = f"parquet:{tmp_path}/emb"
    encoder = load_encoder(checkpoint, device="cpu")
    open_table(table_url).put_many(["n0001", "n0002"], encoder.encode(notes[1:3]), encoder.model_version)
    rows = notes + [dict(notes[3], title="again"), dict(notes[4], note_id=None)]
    loose = NOTES.set(0, NOTES.field("note_id").with_nullable(True))
    write_table(pa.Table.from_pylist(rows, schema=loose), tmp_path / "notes")
    config = EmbedJobConfig(notes=str(tmp_path / "notes"), checkpoint=checkpoint, table=table_url,
                            batch_size=4, chunk_size=5, progress=False)
    summary = run_beam_embed(config, ["--runner=DirectRunner"])
    assert (summary.notes_read, summary.already_embedded, summary.embedded) == (16, 2, 12)
    assert (summary.dead_lettered, summary.images_undecodable, summary.table_count) == (2, 1, 14)
    reasons = sorted(row["reason"] for row in read_table(summary.dead_letter_path).to_pylist())
    assert reasons[0].startswith("duplicate note_id") and reasons[1] == "empty or null note_id"
    lookup = open_table(table_url).get_many([n["note_id"] for n in notes], encoder.model_version)
    assert lookup.missing_ids == []
    np.testing.assert_allclose(lookup.vectors, encoder.encode(notes), atol=1e-4)
