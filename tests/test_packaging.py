"""FAISS packaging: faiss-cpu by default, faiss-gpu instead of it (never on top) with I2I_FAISS=gpu."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def install_requires(tmp_path: Path, faiss: str | None) -> tuple[list[str], str]:
    """(unconditional requirements, the whole requires.txt) that setup.py declares; nothing is installed."""
    env = {k: v for k, v in os.environ.items() if k != "I2I_FAISS"}
    if faiss is not None:
        env["I2I_FAISS"] = faiss
    out = tmp_path / (faiss or "default")
    out.mkdir()
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(out)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=120)
    requires = next(out.glob("*.egg-info")) / "requires.txt"
    every = requires.read_text().split("\n\n")[0]  # the unconditional block; extras follow as [name] blocks
    return [line for line in every.splitlines() if line], requires.read_text()


def test_gpu_requirements_swap_faiss_and_match_everything_else():
    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    faiss_cpu = [p for p in cpu if p.startswith("faiss")]
    faiss_gpu = [p for p in gpu if p.startswith("faiss")]
    assert faiss_cpu == ["faiss-cpu==1.15.1"] and faiss_gpu == ["faiss-gpu==1.15.1"]
    assert [p for p in cpu if not p.startswith("faiss")] == [p for p in gpu if not p.startswith("faiss")]


def test_setup_chooses_one_faiss_wheel(tmp_path):
    default, default_text = install_requires(tmp_path, None)
    gpu, gpu_text = install_requires(tmp_path, "gpu")
    assert "faiss-cpu==1.15.1" in default and "faiss-gpu" not in default_text  # no extra adds it on top
    assert "faiss-gpu==1.15.1" in gpu and "faiss-cpu" not in gpu_text
    assert sorted(p for p in default if not p.startswith("faiss")) == sorted(p for p in gpu if not p.startswith("faiss"))
