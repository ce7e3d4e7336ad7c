"""Installable package for the i2i-recall system (console script: ``i2i``)."""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


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
    install_requires=[r for r in _requirements("requirements.txt") if not r.startswith(("pytest", "hypothesis", "import-linter", "ruff"))],
    extras_require={
        "gpu": ["faiss-gpu==1.15.1"],
        "models": _requirements("requirements-models.txt"),
        "test": ["pytest==9.2.0", "hypothesis==6.170.15", "import-linter==2.17", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["i2i=i2i.app.cli:main"]},
    cmdclass={"build_py": BuildPyWithProto},
)
