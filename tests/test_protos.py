"""The protos: buf lint is clean and the generated code is what ops/gen_protos.py makes now."""

from __future__ import annotations

import filecmp
import importlib.util
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
GENERATED = REPO / "services" / "paygate" / "gen"
BUF = REPO / ".tools" / "node_modules" / ".bin" / "buf"


def _gen_protos():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "ops" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: pathlib.Path) -> set[pathlib.Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_up_to_date(tmp_path: pathlib.Path) -> None:
    fresh = tmp_path / "gen"
    _gen_protos().generate(fresh)
    assert _files(fresh) == _files(GENERATED), "run `make protos` and commit the result"
    stale = [
        str(p) for p in _files(fresh) if not filecmp.cmp(fresh / p, GENERATED / p, shallow=False)
    ]
    assert stale == [], f"generated files differ from proto/: {stale}; run `make protos`"


def test_buf_lint_is_clean() -> None:
    buf = BUF if BUF.exists() else shutil.which("buf")
    if buf is None:
        pytest.skip("buf is not installed (make test installs it from npm as @bufbuild/buf)")
    result = subprocess.run(
        [str(buf), "lint"], cwd=REPO / "proto", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
