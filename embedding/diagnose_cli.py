"""``i2i diagnose``: the paper's visual-neglect diagnostic for one or more checkpoints side by side."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from i2i.core.errors import InputError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="i2i diagnose",
        description="Visual neglect (paper section 2.5): per LLM layer, the share of the note embedding "
                    "position's attention on image vs text tokens, the saliency shares S_v/S_t/S_o, and "
                    "recall when queries carry the image alone. Writes neglect.md and neglect.json.")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint directory (repeat to compare, e.g. basic and notellm2)")
    p.add_argument("--notes", required=True, help="notes table")
    p.add_argument("--pairs", required=True, help="pairs table")
    p.add_argument("--split", default="test", help="pairs split to use (default: test)")
    p.add_argument("--flow-notes", type=int, default=64, help="notes (in pairs) for attention and saliency")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per batch for the saliency loss")
    p.add_argument("--ks", default="10,100", help="recall cut-offs, comma-separated")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu")
    return p


def layer_table(result: dict) -> list[str]:
    lines = ["| layer | attn image | attn text | attn self | S_v | S_t | S_o |", "|---|---|---|---|---|---|---|"]
    for layer, (a, s) in enumerate(zip(result["attention_shares"], result["saliency_shares"])):
        lines.append(f"| {layer} | {a['image']:.3f} | {a['text']:.3f} | {a['other']:.3f} | "
                     f"{s['S_v']:.3f} | {s['S_t']:.3f} | {s['S_o']:.3f} |")
    return lines


def to_markdown(results: dict[str, dict], split: str) -> str:
    names = list(results)
    ks = list(next(iter(results.values()))["recall"]["whole note"])
    lines = ["# Visual-neglect diagnostic", "",
             f"Split `{split}`. Attention: share of the note embedding position's attention on image tokens "
             "(with the mICL visual compressed word and `<IMG_EMB>`), text tokens and itself, mean over heads, "
             "notes and layers. Saliency: relative sizes of S_v, S_t, S_o (paper eq. 3-6). "
             "Recall: queries as whole notes, image alone, text alone; targets and pool are whole notes.", "",
             "| checkpoint | attn image | attn text | S_v (shallow half) | S_v (all) | "
             + " | ".join(f"{kind} {k}" for kind in ("whole", "image alone", "text alone") for k in ks) + " |",
             "|---|---|---|---|---|" + "---|" * (3 * len(ks))]
    for name in names:
        r = results[name]
        attention = np.array([[a["image"], a["text"]] for a in r["attention_shares"]])
        s_v = np.array([s["S_v"] for s in r["saliency_shares"]])
        shallow = s_v[: max(1, len(s_v) // 2)]
        cells = [name, f"{attention[:, 0].mean():.3f}", f"{attention[:, 1].mean():.3f}",
                 f"{shallow.mean():.3f}", f"{s_v.mean():.3f}"]
        for kind in ("whole note", "image alone", "text alone"):
            cells += [f"{r['recall'][kind][k]:.3f}" if kind in r["recall"] else "—" for k in ks]
        lines.append("| " + " | ".join(cells) + " |")
    pools = {name: r["recall"]["pool"] for name, r in results.items()}
    first = next(iter(pools.values()))
    lines += ["", f"Pool: {first['notes']} notes, {first['pairs']} pairs; flow measured on "
                  f"{next(iter(results.values()))['notes']} notes.", ""]
    for name in names:
        lines += [f"## {name} ({results[name]['model_version']})", ""] + layer_table(results[name]) + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import torch

    from embedding.batching import select_pairs
    from embedding.checkpoint import load_model
    from embedding.encoder import NoteEncoder
    from embedding.inputs import NoteProcessor
    from embedding.neglect import NeglectResult, measure_flow, query_recalls, sample_batches
    from embedding.train import load_notes
    from i2i.core.io import atomic_write_text, read_table

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError as exc:
        raise InputError(f"--ks must be comma-separated integers, got {args.ks!r}") from exc
    notes = load_notes(args.notes)
    pairs = select_pairs(read_table(args.pairs), set(notes), args.split, args.pairs).pairs
    if len(pairs) < 2:
        raise InputError(f"pairs table {args.pairs} has {len(pairs)} usable {args.split!r} pairs; need at least 2")
    device = torch.device(args.device)
    results = {}
    for path in args.checkpoint:
        model, tokenizer, meta = load_model(path)
        name = f"{meta.get('variant', model.config.variant)}"
        if name in results:
            name = f"{name} ({Path(path).name})"
        processor = NoteProcessor(model.config, tokenizer)
        batches = sample_batches(pairs, args.batch_size, args.flow_notes)
        attention, saliency, count = measure_flow(model, processor, notes, batches, device)
        model.llm.set_attn_implementation("sdpa")
        encoder = NoteEncoder(model, tokenizer, meta["model_version"], device)
        recall = query_recalls(encoder, notes, pairs, ks)
        result = NeglectResult(attention, saliency, count, len(batches), recall).to_json()
        result["model_version"] = meta["model_version"]
        result["checkpoint"] = str(path)
        results[name] = result
        print(f"{name}: attention on image {attention[:, 0].mean():.3f}, on text {attention[:, 1].mean():.3f}; "
              f"S_v {saliency[:, 0].mean():.3f}; image-alone R@{ks[-1]} {recall['image alone'][f'R@{ks[-1]}']:.3f}"
              f" (whole note {recall['whole note'][f'R@{ks[-1]}']:.3f})")
    out = Path(args.out)
    atomic_write_text(out / "neglect.json", json.dumps({"split": args.split, "checkpoints": results}, indent=2) + "\n")
    atomic_write_text(out / "neglect.md", to_markdown(results, args.split))
    print(f"wrote {out / 'neglect.md'} and {out / 'neglect.json'}")
    return 0
