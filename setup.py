"""Installable package for the i2i-recall system (console script: ``i2i``).

FAISS comes as faiss-cpu (requirements.txt) or, with ``I2I_FAISS=gpu`` in the environment, as
faiss-gpu instead (requirements-gpu.txt): the two install the same ``faiss`` module and must never
be installed together.
"""
import os
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


REQUIREMENTS = {"cpu": "requirements.txt", "gpu": "requirements-gpu.txt"}


def _runtime_requirements() -> list[str]:
    flavour = os.environ.get("I2I_FAISS", "cpu") or "cpu"
    if flavour not in REQUIREMENTS:
        raise SystemExit(f"I2I_FAISS must be one of {sorted(REQUIREMENTS)}, got {flavour!r}")
    return [r for r in _requirements(REQUIREMENTS[flavour]) if not r.startswith(("pytest", "hypothesis", "import-linter", "ruff"))]


class BuildPyWithProto(build_py):
    """Generates the gRPC stubs from proto/ before packaging, so an install never ships stale code."""

    def run(self) -> None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_i2i_protogen", ROOT / "proto" / "codegen.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate(force=True)
        super().run()


setup(
    name="i2i-recall",
    version="0.1.0",
    description="Item-to-item recall for notes, after NoteLLM-2: Beam pipelines, a multimodal "
    "representation model, embedding tables, a FAISS IVF index and a gRPC recall server.",
    python_requires=">=3.10",
    packages=find_packages(include=["i2i*", "pipelines*", "embedding*", "index*", "recall_server*"]),
    package_data={"recall_server": ["_generated/*.py", "_generated/**/*.py", "_generated/STAMP"]},
    include_package_data=True,
    install_requires=_runtime_requirements(),
    extras_require={
        "models": _requirements("requirements-models.txt"),
        "test": ["pytest==9.2.0", "hypothesis==6.170.15", "import-linter==2.17", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["i2i=i2i.app.cli:main"]},
    cmdclass={"build_py": BuildPyWithProto},
)
