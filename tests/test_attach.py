"""The harness can attach to a suite that already runs instead of starting its own.

A nested pytest attaches to this session's suite (its config, its directory) and runs the
banks' health and reflection tests against it; it must pass without starting a second
supervisord or disturbing the running one.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from suite import PROGRAMS, REPO, Suite

pytestmark = pytest.mark.suite

NESTED_TIMEOUT_S = 120.0
# test_bank_reports_serving (3 banks x 2 services) and test_bank_reflection_lists_its_services.
MIN_SELECTED_TESTS = 9
HARNESS_ENV = ("PAYGATE_TEST_ATTACH", "PAYGATE_TEST_BANKS_ONLY", "PAYGATE_CONFIG")


def attach_args(suite: Suite) -> list[str]:
    config = "default" if suite.config_path is None else str(suite.config_path)
    return [
        "--attach", config,
        "--attach-dir", str(suite.dir),
        "--attach-supervisor-conf", str(suite.supervisor_conf),
    ]


def test_nested_pytest_attaches_to_the_running_suite(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    pidfile_before = suite.supervisord_pidfile.read_text()
    pids_before = {program: suite.pid(program) for program in PROGRAMS}
    basetemp = tmp_path / "nested"
    env = {k: v for k, v in os.environ.items() if k not in HARNESS_ENV}

    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "tests/test_banks.py", "-k", "serving or reflection",
            *attach_args(suite), "-p", "no:cacheprovider", "-q", f"--basetemp={basetemp}",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=NESTED_TIMEOUT_S, check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= MIN_SELECTED_TESTS, output
    assert "deselected" in output and "failed" not in output and "error" not in output
    # No second supervisord: the nested run wrote no suite config and no supervisord log of
    # its own (its pidfile would be gone after a shutdown), and ours is untouched.
    assert not list(basetemp.rglob("paygate.toml"))
    assert not list(basetemp.rglob("supervisord.log"))
    assert suite.supervisord_pidfile.read_text() == pidfile_before
    assert {program: suite.pid(program) for program in PROGRAMS} == pids_before
