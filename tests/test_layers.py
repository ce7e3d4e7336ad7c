"""The package layering (``.importlinter``) holds, and the check sees imports made inside functions."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([LINT_IMPORTS, "--no-logo", "--no-cache", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_project_keeps_its_layers_and_has_no_import_cycles():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_inside_a_function_breaks_the_layers(tmp_path):
    (tmp_path / "top").mkdir()
    (tmp_path / "bottom").mkdir()
    (tmp_path / "top" / "__init__.py").write_text("import bottom\n")
    (tmp_path / "bottom" / "__init__.py").write_text(textwrap.dedent("""
        def later():
            import top
            return top
    """))
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""
        [importlinter]
        root_packages =
            top
            bottom

        [importlinter:contract:layers]
        name = top over bottom
        type = layers
        layers =
            top
            bottom
    """))
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bottom -> top" in result.stdout


def test_the_embedding_table_api_imports_without_torch():
    code = ("import sys, embedding.table, embedding.table.parquet, embedding.table.redis, index.store, "
            "recall_server.service; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
