"""The code stays lint- and type-clean: `ruff check` and `mypy --strict` (pyproject.toml) pass."""

from __future__ import annotations

import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
TIMEOUT_S = 300


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def test_ruff_is_clean() -> None:
    result = _run(str(BIN / "ruff"), "check", "--no-cache", "services", "tests", "ops")
    assert result.returncode == 0, f"ruff check failed:\n{result.stdout}{result.stderr}"


def test_mypy_is_clean(tmp_path: pathlib.Path) -> None:
    # A fresh cache: mypy's incremental cache can keep reporting stale import errors after
    # the [tool.mypy] overrides change, and other runs may be writing the shared one.
    result = _run(str(BIN / "mypy"), "--cache-dir", str(tmp_path / "mypy_cache"))
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"
