"""Small real artefacts for tests across the project: tiny checkpoints, notes and pairs tables.

Everything here is built from real components (tiny random backbones, real PNG bytes, real
Parquet tables), just small enough to make in a second or two on a CPU.
"""
from __future__ import annotations

import datetime as dt
import io
import random
from pathlib import Path

import pyarrow as pa
import torch

from embedding.backbones import load_tokenizer
from embedding.config import model_config_from_dict, preset
from embedding.mlrm import MLRM
from i2i.core.schemas import NOTES, PAIRS

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
           "purple": (140, 50, 170), "orange": (240, 140, 30), "grey": (128, 128, 128), "black": (20, 20, 20)}
ITEMS = ["dress", "coat", "sneakers", "bag", "shirt", "boots", "scarf", "hat"]


def tiny_model(variant: str = "notellm2", seed: int = 0) -> tuple[MLRM, object]:
    """A randomly initialised tiny model and its tokenizer (same seed -> same weights)."""
    data = preset("tiny")["model"]
    data["variant"] = variant
    config = model_config_from_dict(data)
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(config.llm)
    return MLRM(config, len(tokenizer), pretrained=True), tokenizer


def make_tiny_checkpoint(out_dir: str, variant: str = "notellm2", seed: int = 0) -> str:
    """Writes a real, loadable checkpoint with tiny random backbones; returns its directory."""
    from embedding.checkpoint import save_checkpoint

    model, tokenizer = tiny_model(variant, seed)
    save_checkpoint(model, tokenizer, out_dir, meta={"step": 0, "backbone": "tiny", "seed": seed})
    return str(out_dir)


def png_bytes(rgb: tuple[int, int, int], size: int = 24, seed: int = 0) -> bytes:
    """A small PNG of one colour with a little noise."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), rgb)
    pixels = image.load()
    for _ in range(size * 2):
        x, y = rng.randrange(size), rng.randrange(size)
        pixels[x, y] = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in rgb)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_notes(count: int = 32, seed: int = 0, groups: int = 8) -> list[dict]:
    """Notes in ``groups`` themes (a colour and an item); a theme's notes share words and image colour."""
    rng = random.Random(seed)
    colours = list(COLOURS)
    published = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    notes = []
    for i in range(count):
        group = i % groups
        colour, item = colours[group % len(colours)], ITEMS[group % len(ITEMS)]
        words = [item, "style", "look", "outfit", "today", "new", "love", "wear"]
        rng.shuffle(words)
        notes.append({
            "note_id": f"n{i:04d}",
            "title": f"my {item} {words[0]}",
            "topics": [item, words[1]],
            "content": " ".join(words[:5]) + f" with this {item}",
            "image": png_bytes(COLOURS[colour], seed=seed * 1000 + i),
            "published_at": published + dt.timedelta(hours=i),
        })
    return notes


def notes_table(notes: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(notes, schema=NOTES)


def make_pairs(notes: list[dict], groups: int = 8, seed: int = 0, val_every: int = 5) -> pa.Table:
    """Pairs of notes in the same theme; every ``val_every``-th pair goes to val, the next one to test."""
    rng = random.Random(seed)
    by_group: dict[int, list[str]] = {}
    for i, note in enumerate(notes):
        by_group.setdefault(i % groups, []).append(note["note_id"])
    rows = []
    for members in by_group.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                rows.append((members[a], members[b]))
    rng.shuffle(rows)
    splits = ["val" if k % val_every == 0 else "test" if k % val_every == 1 else "train" for k in range(len(rows))]
    return pa.Table.from_pylist(
        [{"query_note_id": q, "target_note_id": t, "score": 1.0, "split": s} for (q, t), s in zip(rows, splits)],
        schema=PAIRS)


def theme_attributes(count: int, groups: int = 8) -> pa.Table:
    """The latent attributes of ``make_notes``' notes: each theme's item and colour."""
    colours = list(COLOURS)
    return pa.table({
        "note_id": [f"n{i:04d}" for i in range(count)],
        "category": [ITEMS[(i % groups) % len(ITEMS)] for i in range(count)],
        "colour": [colours[(i % groups) % len(colours)] for i in range(count)],
    })


def write_dataset(directory: str | Path, count: int = 32, groups: int = 8, seed: int = 0,
                  attributes: bool = False) -> tuple[Path, Path]:
    """Writes notes/ and pairs/ Parquet tables under ``directory`` (and ``_attributes/`` when asked,
    as ``i2i data`` does); returns the notes and pairs paths."""
    from i2i.core.io import write_table

    directory = Path(directory)
    notes = make_notes(count, seed, groups)
    write_table(notes_table(notes), directory / "notes")
    write_table(make_pairs(notes, groups, seed), directory / "pairs")
    if attributes:
        write_table(theme_attributes(count, groups), directory / "_attributes")
    return directory / "notes", directory / "pairs"


def distributed_loss_worker(rank: int, world: int, port: int, shards, tau: float, results) -> None:
    """One process of a Gloo group computing eq. 1 on its shard with gathered negatives (for tests)."""
    import os

    import torch.distributed as dist

    from embedding.losses import contrastive_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        local = shards[rank].clone().requires_grad_(True)
        temperature = torch.tensor(tau, requires_grad=True)
        loss = contrastive_loss(local, temperature)
        loss.backward()
        results[rank] = (float(loss), local.grad.clone(), float(temperature.grad))
    finally:
        dist.destroy_process_group()
