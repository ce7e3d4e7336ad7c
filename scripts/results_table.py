#!/usr/bin/env python
"""Makes the results table of docs/results.md: every model variant and baseline, Recall@100/1k.

For each dataset (fashion-notes with images, movielens text only) it runs the whole pipeline
through the ``i2i`` command line: ``i2i data`` -> ``i2i cooccur`` -> ``i2i pairs`` -> ``i2i train``
for each variant -> ``i2i eval`` on the test split, plus the baselines (bm25, minilm, image) and an
untrained checkpoint (zero-shot). Every step writes into ``--work`` and is skipped when its output
is already there, so an interrupted run resumes where it stopped. ``--quick`` is a smoke run
(tiny backbones, few notes, a few steps) that writes its table into the work directory.

    python scripts/results_table.py --work runs/results            # the CPU-sized run (add --steps 30 --batch-size 8 for the docs/results.md one)
    python scripts/results_table.py --work runs/gpu --device cuda --config embedding/configs/gpu_full.json
    python scripts/results_table.py --work /tmp/smoke --quick
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from i2i.core.io import atomic_write_text  # noqa: E402

VARIANTS = ("basic", "micl", "late_fusion", "notellm2", "only_late_fusion", "text_only")
BASELINES = ("bm25", "minilm", "image")
FIRST_VARIANTS = ("basic", "notellm2")  # trained first: the paper's key comparison survives an early stop


@dataclass
class Dataset:
    """One dataset of the table: how to generate it and what runs on it."""

    name: str
    data_args: list[str]
    variants: tuple[str, ...]
    baselines: tuple[str, ...]
    zero_shot_variant: str
    has_images: bool


@dataclass
class RunConfig:
    work: Path
    out: Path
    device: str | None
    backbone: str
    config: str | None
    steps: int | None
    batch_size: int | None
    quick: bool
    datasets: list[Dataset] = field(default_factory=list)
    extra_train_args: list[str] = field(default_factory=list)
    tokens: str = "auto"


def datasets(quick: bool) -> dict[str, Dataset]:
    fashion_size = ["--notes", "240", "--users", "150", "--days", "5"] if quick else []
    return {
        "fashion-notes": Dataset("fashion-notes", fashion_size, VARIANTS, BASELINES, "notellm2", True),
        "movielens": Dataset("movielens", [], ("text_only",), ("bm25", "minilm"), "text_only", False),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def i2i(*args: str) -> None:
    """Runs one ``i2i`` subcommand in this interpreter's environment; a failure stops the run."""
    command = [sys.executable, "-m", "i2i.app.cli", *args]
    log("$ i2i " + " ".join(args))
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO)
    if completed.returncode != 0:
        raise SystemExit(f"step failed with exit code {completed.returncode}: i2i {' '.join(args)}")
    log(f"  done in {time.perf_counter() - started:.0f}s")


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


TEST_QUANTILE = 0.8  # notes published after this share of the timeline form the test split


def test_since(notes: Path) -> str:
    """The publication time after which notes are test notes (the paper tests on a later week)."""
    import numpy as np

    from i2i.core.io import read_table

    published = read_table(notes, columns=["published_at"]).column("published_at").drop_null()
    if len(published) == 0:
        raise SystemExit(f"{notes} has no publication times to split train and test by")
    epoch_ms = np.sort(published.cast("int64").to_numpy())
    return str(int(epoch_ms[int(TEST_QUANTILE * (len(epoch_ms) - 1))]))


def prepare_data(run: RunConfig, dataset: Dataset) -> tuple[Path, Path]:
    root = run.work / dataset.name
    data, cooccur, pairs = root / "data", root / "cooccur", root / "pairs"
    if not (data / "notes").exists():
        i2i("data", dataset.name, "--out", str(data), *dataset.data_args)
    if not (cooccur / "related").exists():
        i2i("cooccur", "--events", str(data / "events"), "--out", str(cooccur), "--runner=DirectRunner")
    if not pairs.exists():
        i2i("pairs", "--related", str(cooccur / "related"), "--notes", str(data / "notes"), "--out", str(pairs),
            "--test-since", test_since(data / "notes"), "--runner=DirectRunner")
    return data / "notes", pairs


def train_args(run: RunConfig) -> list[str]:
    args = ["--backbone", run.backbone]
    if run.config:
        args += ["--config", run.config]
    if run.steps is not None:
        args += ["--steps", str(run.steps)]
    if run.batch_size is not None:
        args += ["--batch-size", str(run.batch_size)]
    return args + run.extra_train_args


def train(run: RunConfig, dataset: Dataset, notes: Path, pairs: Path, variant: str) -> Path:
    """Trains one variant unless its checkpoint is marked finished; an unfinished one resumes."""
    checkpoint = run.work / dataset.name / "checkpoints" / variant
    done = checkpoint.parent / f"{variant}.done.json"
    if done.exists():
        return checkpoint
    started = time.perf_counter()
    resume = ["--resume"] if (checkpoint / "meta.json").exists() else []
    i2i("train", "--notes", str(notes), "--pairs", str(pairs), "--out", str(checkpoint), "--variant", variant,
        *train_args(run), *resume)
    write_json_atomic(done, {"variant": variant, "seconds": round(time.perf_counter() - started, 1),
                             "args": train_args(run)})
    return checkpoint


def untrained_checkpoint(run: RunConfig, dataset: Dataset) -> Path:
    """The model with its pretrained backbones and random new layers, saved without training."""
    checkpoint = run.work / dataset.name / "checkpoints" / f"zero_shot_{dataset.zero_shot_variant}"
    if (checkpoint / "meta.json").exists():
        return checkpoint
    import torch

    from embedding.backbones import load_tokenizer
    from embedding.checkpoint import save_checkpoint
    from embedding.mlrm import MLRM
    from embedding.train_cli import build_run_config, parser

    log(f"building the untrained {dataset.zero_shot_variant} checkpoint {checkpoint}")
    # the same configuration as `i2i train` builds for the trained variants
    args = parser().parse_args(["--notes", "-", "--pairs", "-", "--out", str(checkpoint),
                                "--variant", dataset.zero_shot_variant, *train_args(run)])
    config = build_run_config(args).model
    torch.manual_seed(0)
    tokenizer = load_tokenizer(config.llm)
    model = MLRM(config, len(tokenizer), pretrained=True)
    save_checkpoint(model, tokenizer, checkpoint, meta={"step": 0, "backbone": run.backbone, "zero_shot": True})
    return checkpoint


def evaluate(run: RunConfig, dataset: Dataset, notes: Path, pairs: Path, name: str, method: list[str]) -> dict:
    out = run.work / dataset.name / "eval" / name
    if not (out / "metrics.json").exists():
        args = ["eval", "--notes", str(notes), "--pairs", str(pairs), *method, "--split", "test", "--name", name,
                "--out", str(out), "--plot", str(out / "recall.png"), "--tokens", run.tokens]
        if run.device:
            args += ["--device", run.device]
        i2i(*args)
    return json.loads((out / "metrics.json").read_text())


def run_dataset(run: RunConfig, dataset: Dataset) -> list[tuple[str, str, dict]]:
    """(method, kind, metrics) rows for one dataset, in table order."""
    notes, pairs = prepare_data(run, dataset)
    rows = []
    for baseline in dataset.baselines:
        rows.append((baseline, "baseline", evaluate(run, dataset, notes, pairs, baseline, ["--baseline", baseline])))
    zero_shot = untrained_checkpoint(run, dataset)
    name = f"zero-shot {dataset.zero_shot_variant}"
    rows.append((name, "untrained", evaluate(run, dataset, notes, pairs, name.replace(" ", "_"),
                                             ["--checkpoint", str(zero_shot)])))
    trained = {}
    for variant in sorted(dataset.variants, key=lambda v: (v not in FIRST_VARIANTS, VARIANTS.index(v))):
        checkpoint = train(run, dataset, notes, pairs, variant)
        trained[variant] = evaluate(run, dataset, notes, pairs, variant, ["--checkpoint", str(checkpoint)])
        trained[variant]["training"] = training_summary(checkpoint)
    rows += [(variant, "trained", trained[variant]) for variant in dataset.variants]
    return rows


def training_summary(checkpoint: Path) -> dict:
    """Steps, last losses and throughput from the checkpoint's meta.json history."""
    meta = json.loads((checkpoint / "meta.json").read_text())
    history = meta.get("history") or [{}]
    last = history[-1]
    val = [h["val_loss"] for h in history if "val_loss" in h]
    rates = [h["notes_per_s"] for h in history if "notes_per_s" in h]
    return {"steps": meta.get("step"), "batch_size": meta.get("train_config", {}).get("batch_size"),
            "loss": last.get("loss"), "val_loss": val[-1] if val else None,
            "notes_per_s": sum(rates) / len(rates) if rates else None}


def training_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    trained = [(method, metrics["training"]) for method, kind, metrics in rows if "training" in metrics]
    if not trained:
        return []
    fmt = lambda value, spec: "—" if value is None else format(value, spec)  # noqa: E731
    lines = ["", "| variant | steps | batch (pairs) | last train loss | val loss | train notes/s |", "|---|---|---|---|---|---|"]
    for method, t in trained:
        lines.append(f"| {method} | {t['steps']} | {t['batch_size']} | {fmt(t['loss'], '.3f')} | "
                     f"{fmt(t['val_loss'], '.3f')} | {fmt(t['notes_per_s'], '.1f')} |")
    batch = trained[0][1]["batch_size"]
    if batch:
        lines.append(f"\nChance level of the loss is ln(2B - 1) = {math.log(2 * batch - 1):.3f} for B = {batch} pairs "
                     f"({2 * batch - 1} candidates per note).")
    return lines


def cell(metrics: dict, group: str, key: str) -> str:
    value = metrics["groups"][group]["recall"].get(key)
    return "—" if value is None else f"{value:.3f}"


def markdown_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    first = rows[0][2]
    capped = {f"R@{k // 1000}k" if k >= 1000 else f"R@{k}" for k in first["capped_ks"]}
    keys = ["R@100", "R@1k"]
    label = {k: k + ("*" if k in capped else "") for k in keys}
    groups = [("all", "all"), ("short_query", "short query"), ("short_target", "short target")]
    header = ["method", "kind"] + [f"{label[k]} {title}" for _, title in groups for k in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, kind, metrics in rows:
        cells = [method, kind] + [cell(metrics, group, k) for group, _ in groups for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    def counts(metrics: dict) -> str:
        return ", ".join(f"{title}: {metrics['groups'][group]['pairs']}" for group, title in groups)

    by_counter = {}
    for method, kind, metrics in rows:
        by_counter.setdefault(counts(metrics), []).append(method)
    described = "; ".join(f"{text} ({', '.join(methods)})" for text, methods in by_counter.items())
    lines += ["", f"Test pairs — {described}. Pool: {first['pool_size']} notes (every note of the dataset), "
              f"{first['skipped_pairs']} pairs skipped. Short = fewer than {first['short_tokens']} tokens: checkpoints "
              "count with their own tokenizer, baselines with the SmolLM2-135M tokenizer on the note text, so "
              "the short groups can differ slightly."]
    if capped & set(keys):
        lines.append(f"\\* capped at the pool size ({first['pool_size'] - 1} candidates per query).")
    return lines


def finding(rows: list[tuple[str, str, dict]]) -> str:
    """Does notellm2 beat basic on short-query pairs? Said from the numbers, either way."""
    by_name = {method: metrics for method, _, metrics in rows}
    if "notellm2" not in by_name or "basic" not in by_name:
        return ("notellm2 and basic were not both trained on this dataset (a text-only dataset has no images "
                "for them to differ on), so the comparison is made on fashion-notes.")
    pairs = by_name["basic"]["groups"]["short_query"]["pairs"]
    if not pairs:
        return "The test split has no short-query pair, so the comparison cannot be made."
    parts = []
    for key in ("R@100", "R@1k"):
        ours, base = (by_name[m]["groups"]["short_query"]["recall"][key] for m in ("notellm2", "basic"))
        parts.append(f"{key} {ours:.3f} vs {base:.3f} ({'+' if ours >= base else ''}{ours - base:.3f})")
    ours100 = by_name["notellm2"]["groups"]["short_query"]["recall"]["R@100"]
    base100 = by_name["basic"]["groups"]["short_query"]["recall"]["R@100"]
    verdict = "beats" if ours100 > base100 else ("ties with" if ours100 == base100 else "does not beat")
    one_pair = 1 / pairs
    return (f"On short-query pairs notellm2 {verdict} basic at R@100: {'; '.join(parts)}, over {pairs} pairs "
            f"(one pair moves a recall by {one_pair:.3f}; one seed).")


ANALYSIS_MARKER = "<!-- analysis: kept when the table is regenerated -->"


def kept_analysis(path: Path) -> str:
    """The hand-written part of an existing results page (from the marker on), kept across reruns."""
    text = path.read_text() if path.exists() else ""
    at = text.find(ANALYSIS_MARKER)
    return text[at:] if at >= 0 else ANALYSIS_MARKER + "\n"


def write_results(run: RunConfig, tables: dict[str, list], seconds: float) -> None:
    lines = ["# Results", "",
             "Recall@100 and Recall@1k on the test split, made by `scripts/results_table.py` "
             f"({'quick smoke run' if run.quick else 'CPU-sized run' if not run.device else 'run'}; backbone `{run.backbone}`"
             f"{', config ' + run.config if run.config else ''}"
             f"{', ' + str(run.steps) + ' steps' if run.steps else ''}"
             f"{', batch ' + str(run.batch_size) if run.batch_size else ''}, "
             f"device {run.device or 'auto'}).", ""]
    for name, rows in tables.items():
        lines += [f"## {name}", ""] + markdown_table(rows) + training_table(rows)
        lines += ["", "**Finding:** " + finding(rows), ""]
    lines.append(kept_analysis(run.out))
    atomic_write_text(run.out, "\n".join(lines))
    write_json_atomic(run.work / "results.json", {name: [{"method": m, "kind": k, "metrics": x} for m, k, x in rows]
                                                  for name, rows in tables.items()})
    log(f"wrote {run.out} and {run.work / 'results.json'}")


def parse_args(argv: list[str]) -> RunConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--work", required=True, type=Path, help="work directory (data, checkpoints, evaluations)")
    parser.add_argument("--out", type=Path, help="results markdown (default docs/results.md; --quick: WORK/results.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny backbones, small data, a few steps")
    parser.add_argument("--device", help="torch device for training and evaluation, e.g. cuda (default: auto)")
    parser.add_argument("--backbone", help="i2i train --backbone (default: offline; --quick: tiny)")
    parser.add_argument("--config", help="i2i train --config FILE (e.g. embedding/configs/gpu_full.json)")
    parser.add_argument("--steps", type=int, help="training steps per variant (default: the config's)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the config's)")
    parser.add_argument("--datasets", default="fashion-notes,movielens", help="comma-separated datasets")
    parser.add_argument("--variants", help="comma-separated variants to train on fashion-notes (default: all six)")
    parser.add_argument("--train-arg", action="append", default=[], help="extra argument for i2i train (repeatable)")
    args = parser.parse_args(argv)
    known = datasets(args.quick)
    chosen = []
    for name in args.datasets.split(","):
        if name not in known:
            parser.error(f"unknown dataset {name!r}: expected {', '.join(known)}")
        chosen.append(known[name])
    if args.variants:
        variants = tuple(args.variants.split(","))
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants {unknown}: expected {', '.join(VARIANTS)}")
        for dataset in chosen:
            if dataset.has_images:
                dataset.variants = variants
    extra = list(args.train_arg)
    if args.device:
        extra += ["--device", args.device]
    return RunConfig(
        work=args.work.resolve(),
        out=(args.out or (args.work / "results.md" if args.quick else REPO / "docs" / "results.md")).resolve(),
        device=args.device,
        backbone=args.backbone or ("tiny" if args.quick else "offline"),
        config=args.config,
        steps=args.steps if args.steps is not None else (3 if args.quick else None),
        batch_size=args.batch_size if args.batch_size is not None else (8 if args.quick else None),
        quick=args.quick,
        datasets=chosen,
        extra_train_args=extra,
        tokens="whitespace" if args.quick else "auto",
    )


def main(argv: list[str] | None = None) -> int:
    run = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    tables = {}
    for dataset in run.datasets:
        log(f"== {dataset.name}")
        tables[dataset.name] = run_dataset(run, dataset)
        write_results(run, tables, time.perf_counter() - started)  # a partial table survives an interruption
    return 0


if __name__ == "__main__":
    sys.exit(main())
