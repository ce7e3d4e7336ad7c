"""Training throughput (notes/s) of the representation model, against the ``basic`` variant as reference.

The paper (table 7) notes that NoteLLM-2's longer mICL prompt makes training a little slower than
the basic method; this benchmark measures that ratio for any configuration, in the same run.

    python bench/train_bench.py --config tiny --steps 5
    python bench/train_bench.py --config cpu_offline --batch-size 8 --steps 5
    python bench/train_bench.py --config gpu_full --device cuda --steps 20     # on a GPU host

Each timed step is a full forward, backward and optimizer step on a fixed batch of 2B generated
notes (with images); warmup steps are excluded. On CUDA it uses bf16 autocast, as training does.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from embedding.backbones import load_tokenizer  # noqa: E402
from embedding.config import load_json, merge, preset, run_config_from_dict  # noqa: E402
from embedding.encoder import autocast_for  # noqa: E402
from embedding.inputs import NoteProcessor  # noqa: E402
from embedding.mlrm import MLRM  # noqa: E402
from embedding.testing import make_notes  # noqa: E402
from embedding.train import batch_loss, make_optimizer  # noqa: E402
from i2i.core.device import pick_device  # noqa: E402


def measure(run, variant: str, device: torch.device, steps: int, warmup: int) -> dict:
    run.model.variant = variant
    run.model.validate()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(run.model.llm)
    model = MLRM(run.model, len(tokenizer)).to(device).train()
    optimizer = make_optimizer(model, run.train)
    notes = make_notes(2 * run.train.batch_size, groups=run.train.batch_size)
    for note in notes:  # realistic lengths: the prompt's note part fills its token cap
        note["content"] = (note["content"] + " ") * 12
    batch = NoteProcessor(model.config, tokenizer).prepare(notes).to(device)
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        with autocast_for(device, run.train.bf16):
            loss = batch_loss(model, model(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - tick)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model, optimizer
    return {"variant": variant, "seconds_per_step": seconds, "notes_per_s": len(notes) / seconds,
            "seq_len": int(batch.input_ids.shape[1]), "peak_gib": peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="cpu_offline", help="preset name (tiny, cpu_offline, gpu_full) or JSON file")
    p.add_argument("--variant", default="notellm2")
    p.add_argument("--reference", default="basic", help="variant measured as the reference")
    p.add_argument("--device", default=None, help="cuda when present, else cpu")
    p.add_argument("--batch-size", type=int, help="pairs per step (default: the config's)")
    p.add_argument("--llm-layers", type=int)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    # a JSON file overrides the CPU-sized offline preset, as ``i2i train --config`` does
    data = merge(preset("cpu_offline"), load_json(args.config)) if args.config.endswith(".json") \
        else preset(args.config)
    if args.batch_size:
        data = merge(data, {"train": {"batch_size": args.batch_size}})
    if args.llm_layers:
        data = merge(data, {"model": {"llm": {"num_layers": args.llm_layers}}})
    run = run_config_from_dict(data)
    device = pick_device(args.device)
    print(f"config {args.config}, device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {run.train.batch_size} pairs = {2 * run.train.batch_size} notes, {args.steps} timed steps")
    results = [measure(run, v, device, args.steps, args.warmup) for v in (args.reference, args.variant)]
    reference = results[0]
    print(f"{'variant':<18}{'s/step':>10}{'notes/s':>10}{'seq len':>9}{'vs ' + reference['variant']:>12}{'peak GiB':>10}")
    for r in results:
        ratio = r["notes_per_s"] / reference["notes_per_s"]
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(f"{r['variant']:<18}{r['seconds_per_step']:>10.3f}{r['notes_per_s']:>10.1f}{r['seq_len']:>9}"
              f"{ratio:>11.2f}x{peak:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
