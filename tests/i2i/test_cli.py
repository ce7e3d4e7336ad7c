import subprocess
import sys

from i2i.app.cli import SUBCOMMANDS, main

CONTRACT_COMMANDS = ["cooccur", "pairs", "train", "embed", "index", "serve", "recall", "eval", "demo"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "i2i.app.cli", *args], capture_output=True, text=True)


def test_help_lists_contract_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in CONTRACT_COMMANDS + ["data", "run"]:
        assert f"  {name} " in result.stdout
    assert set(CONTRACT_COMMANDS) <= set(SUBCOMMANDS)


def test_unknown_command_fails_with_reason():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "fashion-notes", "--out", str(tmp_path), "--notes", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["i2i data: error: argument --notes: must be a positive integer (must be at least 1), got 0"]


def test_every_subcommand_has_help():
    for name in SUBCOMMANDS:
        result = run_cli(name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        assert "usage:" in result.stdout.lower(), name
