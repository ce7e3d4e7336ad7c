#!/usr/bin/env python
"""Makes the results table of docs/results.md: every model variant and baseline, Recall@100/1k.

For each dataset (fashion-notes with images, movielens text only) it runs the whole pipeline
through the ``i2i`` command line: ``i2i data`` -> ``i2i cooccur`` -> ``i2i pairs --test-since`` ->
``i2i train`` for each variant and seed -> ``i2i eval`` on the test split, plus the baselines (bm25,
minilm, image), the untrained checkpoint of every trained variant (zero-shot), the random floor and
the oracle ceiling.

The protocol is the paper's (section 2.3): train and val pairs come from the notes before the test
period, the test pool is every note published in the last week (``i2i eval --pool-since``), each
query ranks all other pool notes; R@100/1k/10k on all, short-query and short-target pairs with
95% bootstrap intervals, basic, notellm2 and the random row averaged over seeds 42, 43, 44 (the
other variants one seed, ``--ablation-seeds``), and the paired bootstrap difference notellm2 - basic
on the same pairs. Every step writes into ``--work`` and is skipped when its output is already
there, so an interrupted run resumes where it stopped. ``--quick`` is a smoke run (tiny backbones, few notes, a few steps, one seed) that writes
its table into the work directory.

    python scripts/results_table.py --work runs/results            # the CPU-sized run
    python scripts/results_table.py --work runs/results --no-train # baselines, random and oracle only
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
SEEDS = (42, 43, 44)
ABLATION_SEEDS = (42,)  # the other variants: one seed each by default (the paper's comparison is basic vs notellm2)
# Share of the pre-test pairs held out for validation on fashion-notes: about 800 pairs, so the
# every-val-pair diagnostics at the start and end of each training stay cheap on a CPU. The test
# split does not depend on it.
VAL_FRACTION = 0.02
VAL_EVERY = 100  # diagnostics every 100 steps as well: the training curves of the table's checkpoints
TEST_DAYS = 7  # the test pool: notes published in the last week
FIRST_VARIANTS = ("basic", "notellm2")  # trained first: the paper's key comparison survives an early stop


@dataclass
class Dataset:
    """One dataset of the table: how to generate it and what runs on it."""

    name: str
    data_args: list[str]
    pairs_args: list[str]
    train_args: list[str]
    variants: tuple[str, ...]
    baselines: tuple[str, ...]
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
    seeds: tuple[int, ...] = SEEDS
    ablation_seeds: tuple[int, ...] = ABLATION_SEEDS
    train: bool = True
    json_out: Path | None = None
    bootstrap: int = 1000


def datasets(quick: bool) -> dict[str, Dataset]:
    # the defaults of `i2i data fashion-notes` are the benchmark's sizes
    fashion_size = ["--notes", "600", "--users", "40", "--days", "5", "--test-days", "2"] if quick else []
    return {
        "fashion-notes": Dataset("fashion-notes", fashion_size, ["--val-fraction", str(VAL_FRACTION)],
                                 ["--val-every", str(VAL_EVERY)], VARIANTS, BASELINES, True),
        "movielens": Dataset("movielens", [], [], [], ("text_only",), ("bm25", "minilm"), False),
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


TEST_QUANTILE = 0.8  # without a generator's test period: notes after this share of the timeline are test notes


def test_since(data: Path) -> str:
    """Start of the test period (epoch ms): the generator's ``test_since`` (its last week), else the
    publication time after which the latest 20% of notes come."""
    import datetime as dt

    import numpy as np

    from i2i.core.io import read_table

    summary = data / "_SUMMARY.json"
    if summary.exists() and "test_since" in json.loads(summary.read_text()):
        since = dt.datetime.fromisoformat(json.loads(summary.read_text())["test_since"])
        return str(int(since.timestamp() * 1000))
    published = read_table(data / "notes", columns=["published_at"]).column("published_at").drop_null()
    if len(published) == 0:
        raise SystemExit(f"{data / 'notes'} has no publication times to split train and test by")
    epoch_ms = np.sort(published.cast("int64").to_numpy())
    return str(int(epoch_ms[int(TEST_QUANTILE * (len(epoch_ms) - 1))]))


@dataclass
class Prepared:
    notes: Path
    pairs: Path
    test_since: str  # epoch ms: the test pool's start
    attributes: Path | None  # latent attributes (the oracle), when the dataset has them


def prepare_data(run: RunConfig, dataset: Dataset) -> Prepared:
    root = run.work / dataset.name
    data, cooccur, pairs = root / "data", root / "cooccur", root / "pairs"
    if not (data / "notes").exists():
        i2i("data", dataset.name, "--out", str(data), *dataset.data_args)
    since = test_since(data)
    if not (cooccur / "related").exists():
        i2i("cooccur", "--events", str(data / "events"), "--out", str(cooccur), "--runner=DirectRunner")
    if not pairs.exists():
        i2i("pairs", "--related", str(cooccur / "related"), "--notes", str(data / "notes"), "--out", str(pairs),
            "--test-since", since, *dataset.pairs_args, "--runner=DirectRunner")
    attributes = data / "_attributes"
    return Prepared(data / "notes", pairs, since, attributes if attributes.exists() else None)


def train_args(run: RunConfig) -> list[str]:
    args = ["--backbone", run.backbone]
    if run.config:
        args += ["--config", run.config]
    if run.steps is not None:
        args += ["--steps", str(run.steps)]
    if run.batch_size is not None:
        args += ["--batch-size", str(run.batch_size)]
    return args + run.extra_train_args


def train(run: RunConfig, dataset: Dataset, notes: Path, pairs: Path, variant: str, seed: int) -> Path:
    """Trains one variant with one seed unless its checkpoint is marked finished; an unfinished one resumes."""
    checkpoint = run.work / dataset.name / "checkpoints" / f"{variant}_seed{seed}"
    done = checkpoint.parent / f"{variant}_seed{seed}.done.json"
    if done.exists():
        return checkpoint
    started = time.perf_counter()
    resume = ["--resume"] if (checkpoint / "meta.json").exists() else []
    i2i("train", "--notes", str(notes), "--pairs", str(pairs), "--out", str(checkpoint), "--variant", variant,
        "--seed", str(seed), *dataset.train_args, *train_args(run), *resume)
    write_json_atomic(done, {"variant": variant, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
                             "args": train_args(run)})
    return checkpoint


def untrained_checkpoint(run: RunConfig, dataset: Dataset, variant: str) -> Path:
    """The model with its pretrained backbones and random new layers, saved without training."""
    checkpoint = run.work / dataset.name / "checkpoints" / f"zero_shot_{variant}"
    if (checkpoint / "meta.json").exists():
        return checkpoint
    from embedding.untrained import save_untrained_checkpoint

    log(f"building the untrained {variant} checkpoint {checkpoint}")
    # the same configuration as `i2i train` builds for the trained variants
    return save_untrained_checkpoint(checkpoint, variant, train_args(run))


def evaluate(run: RunConfig, dataset: Dataset, data: Prepared, name: str, method: list[str], seed: int = 0) -> Path:
    """One ``i2i eval`` on the test pool (skipped when done); returns its output directory."""
    out = run.work / dataset.name / "eval" / name
    if not (out / "metrics.json").exists():
        args = ["eval", "--notes", str(data.notes), "--pairs", str(data.pairs), *method, "--split", "test",
                "--name", name.split("/")[0], "--pool-since", data.test_since, "--out", str(out),
                "--plot", str(out / "recall.png"), "--tokens", run.tokens, "--seed", str(seed),
                "--bootstrap", str(run.bootstrap)]
        if run.device:
            args += ["--device", run.device]
        i2i(*args)
    return out


def seeded(run: RunConfig, dataset: Dataset, data: Prepared, name: str, methods: dict[int, list[str]]) -> tuple[dict, list[Path]]:
    """Evaluations of one method per seed, averaged per pair over the seeds."""
    from embedding.seed_average import averaged_metrics

    dirs = [evaluate(run, dataset, data, f"{name}/seed{seed}", method, seed) for seed, method in methods.items()]
    metrics = averaged_metrics(dirs, run.bootstrap)
    metrics["method"] = name
    return metrics, dirs


def single(run: RunConfig, dataset: Dataset, data: Prepared, name: str, method: list[str]) -> tuple[dict, list[Path]]:
    """A deterministic method: one evaluation stands for every seed."""
    out = evaluate(run, dataset, data, name, method)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["runs"] = 1
    return metrics, [out]


def run_dataset(run: RunConfig, dataset: Dataset) -> tuple[list[tuple[str, str, dict]], dict]:
    """(method, kind, metrics) rows for one dataset in table order, and the paired differences."""
    data = prepare_data(run, dataset)
    rows, dirs = [], {}

    def add(name: str, kind: str, result: tuple[dict, list[Path]]) -> None:
        rows.append((name, kind, result[0]))
        dirs[name] = result[1]

    add("random", "floor", seeded(run, dataset, data, "random", {s: ["--baseline", "random"] for s in run.seeds}))
    if data.attributes is not None:
        add("oracle", "ceiling", single(run, dataset, data, "oracle",
                                        ["--baseline", "oracle", "--attributes", str(data.attributes)]))
    for baseline in dataset.baselines:
        add(baseline, "baseline", single(run, dataset, data, baseline, ["--baseline", baseline]))
    if not run.train:
        return rows, {}
    cache = ["--vision-cache", str(run.work / dataset.name / "vision_cache")]  # one frozen encoder for all
    untrained, trained = {}, {}
    # variant by variant, each with its untrained checkpoint: the paper's key comparison comes first
    for variant in sorted(dataset.variants, key=lambda v: (v not in FIRST_VARIANTS, VARIANTS.index(v))):
        zero_shot = untrained_checkpoint(run, dataset, variant)
        untrained[variant] = single(run, dataset, data, f"zero-shot_{variant}", ["--checkpoint", str(zero_shot), *cache])
        seeds = run.seeds if variant in FIRST_VARIANTS else run.ablation_seeds
        checkpoints = {seed: train(run, dataset, data.notes, data.pairs, variant, seed) for seed in seeds}
        trained[variant] = seeded(run, dataset, data, variant,
                                  {s: ["--checkpoint", str(c), *cache] for s, c in checkpoints.items()})
        trained[variant][0]["training"] = [{"seed": seed, **training_summary(checkpoints[seed])} for seed in seeds]
    for variant in dataset.variants:
        add(f"zero-shot {variant}", "untrained", untrained[variant])
    for variant in dataset.variants:
        add(variant, "trained", trained[variant])
    from embedding.seed_average import paired_seed_difference

    def difference(a: str, b: str) -> dict:
        return paired_seed_difference(dirs[a], dirs[b], [g for g, _ in GROUPS], (100, 1000), run.bootstrap)

    differences = {}
    if "notellm2" in dirs and "basic" in dirs:
        differences["notellm2 - basic"] = difference("notellm2", "basic")
    for variant in dataset.variants:  # what training gave each variant, on the same pairs
        differences[f"{variant}{GAIN}"] = difference(variant, f"zero-shot {variant}")
    return rows, differences


def training_summary(checkpoint: Path) -> dict:
    """Steps, last losses and throughput from the checkpoint's meta.json history."""
    meta = json.loads((checkpoint / "meta.json").read_text())
    history = meta.get("history") or [{}]
    last = history[-1]
    val = [h["val_loss"] for h in history if "val_loss" in h]
    rates = [h["notes_per_s"] for h in history if "notes_per_s" in h]
    diagnostics = meta.get("diagnostics") or []
    start = diagnostics[0] if diagnostics and diagnostics[0].get("step") == 0 else {}
    end = diagnostics[-1] if diagnostics else {}
    reference = meta.get("reference") or {}
    return {"steps": meta.get("step"), "batch_size": meta.get("train_config", {}).get("batch_size"),
            "loss": last.get("loss"), "val_loss": end.get("val_loss", val[-1] if val else None),
            "val_loss_start": start.get("val_loss"), "chance_loss": reference.get("chance_loss"),
            "oracle_loss": reference.get("oracle_loss"), "knn_category": end.get("knn_category"),
            "knn_colour": end.get("knn_colour"), "probe_cosine": end.get("probe_cosine"),
            "notes_per_s": sum(rates) / len(rates) if rates else None}


def training_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    """One row per trained checkpoint (every seed): its losses against chance and the oracle, and its probes."""
    trained = [(method, t) for method, kind, metrics in rows for t in metrics.get("training", [])]
    if not trained:
        return []
    fmt = lambda value, spec: "—" if value is None else format(value, spec)  # noqa: E731
    lines = ["", "| variant | seed | steps | batch (pairs) | last train loss | val loss (start -> end) | chance | "
             "oracle | kNN category | kNN colour | probe cosine | train notes/s |", "|" + "---|" * 12]
    for method, t in trained:
        lines.append(f"| {method} | {t['seed']} | {t['steps']} | {t['batch_size']} | {fmt(t['loss'], '.3f')} | "
                     f"{fmt(t.get('val_loss_start'), '.3f')} -> {fmt(t['val_loss'], '.3f')} | "
                     f"{fmt(t.get('chance_loss'), '.3f')} | {fmt(t.get('oracle_loss'), '.3f')} | "
                     f"{fmt(t.get('knn_category'), '.2f')} | {fmt(t.get('knn_colour'), '.2f')} | "
                     f"{fmt(t.get('probe_cosine'), '.3f')} | {fmt(t['notes_per_s'], '.1f')} |")
    batch = trained[0][1]["batch_size"]
    if batch:
        lines.append(f"\nChance level of the loss is ln(2B - 1) = {math.log(2 * batch - 1):.3f} for B = {batch} pairs "
                     f"({2 * batch - 1} candidates per note).")
    return lines


GROUPS = [("all", "all"), ("short_query", "short query"), ("short_target", "short target")]
KEYS = ["R@100", "R@1k", "R@10k"]


def cell(metrics: dict, group: str, key: str) -> str:
    value = metrics["groups"][group]["recall"].get(key)
    if value is None:
        return "—"
    low_high = metrics["groups"][group].get("interval", {}).get(key)
    return f"{value:.3f}" + (f" ({low_high[0]:.3f}–{low_high[1]:.3f})" if low_high else "")


def markdown_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    first = rows[0][2]
    capped = {f"R@{k // 1000}k" if k >= 1000 else f"R@{k}" for k in first["capped_ks"]}
    label = {k: k + ("*" if k in capped else "") for k in KEYS}
    header = ["method", "kind", "runs"] + [f"{label[k]} {title}" for _, title in GROUPS for k in KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, kind, metrics in rows:
        cells = [method, kind, str(metrics.get("runs", 1))] + [cell(metrics, group, k) for group, _ in GROUPS for k in KEYS]
        lines.append("| " + " | ".join(cells) + " |")

    def counts(metrics: dict) -> str:
        return ", ".join(f"{title}: {metrics['groups'][group]['pairs']}" for group, title in GROUPS)

    by_counter = {}
    for method, kind, metrics in rows:
        by_counter.setdefault(counts(metrics), []).append(method)
    described = "; ".join(f"{text} ({', '.join(methods)})" for text, methods in by_counter.items())
    lines += ["", f"Test pairs — {described}. Test pool: {first['pool_size']} notes (every note published in the test "
              f"period, none of them in a training or validation pair), each query ranked against the other "
              f"{first['pool_size'] - 1}; {first['skipped_pairs']} pairs skipped. In brackets: 95% bootstrap interval "
              "over pairs. `runs`: seeds averaged per pair (a deterministic method runs once). "
              f"Short = fewer than {first['short_tokens']} tokens: checkpoints count with their own tokenizer, "
              "baselines with the SmolLM2-135M tokenizer on the note text, so the short groups can differ slightly."]
    if capped & set(KEYS):
        lines.append(f"\\* capped at the pool size: measured at k = {first['pool_size'] - 1} (every candidate), "
                     "so it is 1.0 by construction.")
    return lines


GAIN = " - its untrained checkpoint"


def difference_cell(comparison: dict, group: str, key: str) -> str:
    diff = comparison["groups"].get(group, {}).get(key)
    if diff is None:
        return "—"
    d = diff["difference"]
    return f"{d['value']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}), {p_value(diff['p_value'])}"


def difference_lines(differences: dict) -> list[str]:
    """The full table of each comparison, then one line per variant for what training gave it."""
    lines = []
    gains = {name[:-len(GAIN)]: c for name, c in differences.items() if name.endswith(GAIN)}
    for name, comparison in differences.items():
        if name.endswith(GAIN):
            continue
        lines += ["", f"Paired bootstrap difference {name} on the same {comparison['pairs_compared']} pairs "
                  "(seed-averaged hits; 95% interval, two-sided p):", "",
                  "| pairs | " + " | ".join(f"Δ{k}" for k in ("R@100", "R@1k")) + " |", "|---|---|---|"]
        for group, title in GROUPS:
            lines.append(f"| {title} | " + " | ".join(difference_cell(comparison, group, k) for k in ("R@100", "R@1k")) + " |")
    if gains:
        lines += ["", "Each trained variant minus its untrained checkpoint, ΔR@100 on the same pairs (seed-averaged "
                  "hits; 95% interval, two-sided p):", "",
                  "| variant | " + " | ".join(title for _, title in GROUPS) + " |", "|" + "---|" * (len(GROUPS) + 1)]
        for variant, comparison in gains.items():
            lines.append(f"| {variant} | " + " | ".join(difference_cell(comparison, g, "R@100") for g, _ in GROUPS) + " |")
    return lines


def p_value(p: float) -> str:
    """A bootstrap p-value of 0 means none of the draws crossed 0: below the draws' resolution."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def finding(rows: list[tuple[str, str, dict]], differences: dict) -> str:
    """Does notellm2 beat basic on short-query pairs? Said from the paired difference, either way."""
    comparison = differences.get("notellm2 - basic")
    if comparison is None:
        return ("notellm2 and basic were not both trained on this dataset (a text-only dataset has no images "
                "for them to differ on, or training was skipped), so there is no comparison here.")
    diff = comparison["groups"]["short_query"]["R@100"]
    if diff is None:
        return "The test split has no short-query pair, so the comparison cannot be made."
    d = diff["difference"]
    if d["low"] > 0:
        verdict = "beats"
    elif d["high"] < 0:
        verdict = "is beaten by"
    else:
        verdict = "cannot be told apart from"
    return (f"On short-query pairs notellm2 {verdict} basic at R@100: {diff['a']:.3f} vs {diff['b']:.3f}, "
            f"difference {d['value']:+.3f} (95% interval {d['low']:+.3f} to {d['high']:+.3f}, {p_value(diff['p_value'])}) "
            f"over {diff['pairs']} pairs, seeds averaged.")


ANALYSIS_MARKER = "<!-- analysis: kept when the table is regenerated -->"


def kept_analysis(path: Path) -> str:
    """The hand-written part of an existing results page (from the marker on), kept across reruns."""
    text = path.read_text() if path.exists() else ""
    at = text.find(ANALYSIS_MARKER)
    return text[at:] if at >= 0 else ANALYSIS_MARKER + "\n"


def write_results(run: RunConfig, tables: dict[str, tuple[list, dict]], seconds: float) -> None:
    lines = ["# Results", "",
             "Recall on the test pool under the paper's protocol, made by `scripts/results_table.py` "
             f"({'quick smoke run' if run.quick else 'CPU-sized run' if not run.device else 'run'}; backbone `{run.backbone}`"
             f"{', config ' + run.config if run.config else ''}"
             f"{', ' + str(run.steps) + ' steps' if run.steps else ''}"
             f"{', batch ' + str(run.batch_size) if run.batch_size else ''}, "
             f"device {run.device or 'auto'}, seeds {', '.join(map(str, run.seeds))} for basic and notellm2, "
             f"{', '.join(map(str, run.ablation_seeds))} for the other variants"
             f"{', no training' if not run.train else ''}).", ""]
    for name, (rows, differences) in tables.items():
        lines += [f"## {name}", ""] + markdown_table(rows) + difference_lines(differences) + training_table(rows)
        lines += ["", "**Finding:** " + finding(rows, differences), ""]
    lines.append(kept_analysis(run.out))
    atomic_write_text(run.out, "\n".join(lines))
    json_out = run.json_out or run.work / "results.json"
    write_json_atomic(json_out, {name: {"rows": [{"method": m, "kind": k, "metrics": x} for m, k, x in rows],
                                        "paired_differences": differences}
                                 for name, (rows, differences) in tables.items()})
    log(f"wrote {run.out} and {json_out}")


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
    parser.add_argument("--seeds", default=None, help="comma-separated seeds of basic and notellm2, trained and "
                        "averaged (default 42,43,44; --quick: 42)")
    parser.add_argument("--ablation-seeds", default=None, help="comma-separated seeds of the other variants "
                        "(default 42)")
    parser.add_argument("--no-train", action="store_true", help="only the baselines, random and oracle rows")
    parser.add_argument("--baselines", help="comma-separated baselines (default: bm25,minilm,image where the dataset has them)")
    parser.add_argument("--json", type=Path, help="machine-readable results (default WORK/results.json)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per interval (default 1000)")
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
    if args.baselines:
        wanted = tuple(args.baselines.split(","))
        unknown = [b for b in wanted if b not in BASELINES]
        if unknown:
            parser.error(f"unknown baselines {unknown}: expected {', '.join(BASELINES)}")
        for dataset in chosen:
            dataset.baselines = tuple(b for b in wanted if b in dataset.baselines)
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
        seeds=tuple(int(x) for x in args.seeds.split(",")) if args.seeds else ((42,) if args.quick else SEEDS),
        ablation_seeds=tuple(int(x) for x in args.ablation_seeds.split(",")) if args.ablation_seeds else ABLATION_SEEDS,
        train=not args.no_train,
        json_out=args.json.resolve() if args.json else None,
        bootstrap=args.bootstrap,
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
