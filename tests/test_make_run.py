"""`make run`: four processes RUNNING under supervisord, and Ctrl-C stops them all cleanly.

It runs the real Makefile target, in a temporary RUN_DIR with a configuration of free ports,
so it never touches a suite a person runs from the repository root.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest
from suite import BIN, PROGRAMS, REPO, Suite, load_gen_certs, write_config

pytestmark = pytest.mark.suite

START_TIMEOUT_S = 60.0


def _status(run_dir: pathlib.Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(REPO / "supervisord.conf"), "status"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout


def _make_run(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`make run` in RUN_DIR=tmp_path on free ports, once every program is RUNNING."""
    load_gen_certs().generate(tmp_path / "certs")
    config_path = write_config(tmp_path)
    env = {**os.environ, "PAYGATE_CONFIG": str(config_path)}
    with (tmp_path / "make-run.log").open("w") as log:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"RUN_DIR={tmp_path}"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        status = _status(tmp_path, env)
        states = dict(line.split()[:2] for line in status.splitlines() if line.strip())
        running = [p for p in PROGRAMS if states.get(p) == "RUNNING"]
        if len(running) == len(PROGRAMS):
            return make, env
        if make.poll() is not None or time.monotonic() > deadline:
            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=60)
            raise AssertionError(
                f"not all RUNNING in time:\n{status}\n{(tmp_path / 'make-run.log').read_text()}"
            )
        time.sleep(0.5)


def test_make_run_starts_four_processes_and_ctrl_c_stops_them(tmp_path: pathlib.Path) -> None:
    make, env = _make_run(tmp_path)
    config_path = pathlib.Path(env["PAYGATE_CONFIG"])
    try:
        # ... and answering: what a person sees before pressing Ctrl-C.
        Suite.attach(
            config_path,
            supervisor_conf=REPO / "supervisord.conf",
            directory=tmp_path,
            scratch=tmp_path,
            programs=PROGRAMS,
        )
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        make.wait(timeout=60)
    _assert_all_stopped_cleanly(tmp_path)


def test_make_stop_returns_once_every_program_has_stopped(tmp_path: pathlib.Path) -> None:
    make, env = _make_run(tmp_path)
    try:
        stop = subprocess.run(
            ["make", "--no-print-directory", "stop", f"RUN_DIR={tmp_path}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False,
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        # Gone when `make stop` returns, not seconds later (it used to return at once).
        assert make.wait(timeout=2) == 0
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=60)
    _assert_all_stopped_cleanly(tmp_path)


def test_make_run_prints_no_crit_line(tmp_path: pathlib.Path) -> None:
    """supervisord logs CRIT for a control socket without a name and password, and, run by
    root, for not being told its user: neither should greet a person at every `make run`."""
    make, _ = _make_run(tmp_path)
    os.killpg(make.pid, signal.SIGINT)
    make.wait(timeout=60)
    printed = (tmp_path / "make-run.log").read_text()
    logged = (tmp_path / "var" / "log" / "supervisord.log").read_text()
    assert "supervisord started" in printed, printed  # it does print its log
    crit = [line for line in (printed + logged).splitlines() if " CRIT " in line]
    assert crit == [], "\n".join(crit)


def _assert_all_stopped_cleanly(run_dir: pathlib.Path) -> None:
    supervisord_log = (run_dir / "var" / "log" / "supervisord.log").read_text()
    for program in PROGRAMS:
        assert f"stopped: {program} (exit status 0)" in supervisord_log, supervisord_log
    assert not (run_dir / "var" / "supervisor.sock").exists()
