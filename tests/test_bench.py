"""paygate-bench: a short run against the shared suite makes a complete report, and its
money check holds. Speed is measured by the bench, never asserted by a test.

The pure parts (percentiles, the money check) are tested without a suite, including
that the money check does fail when money appears or stays held.
"""

from __future__ import annotations

import json
import pathlib
import socket

import pytest
from paygate.bench import procstat
from paygate.bench.cli import main as bench_main
from paygate.bench.report import percentile
from paygate.bench.users import AccountState, check_money
from suite import BANKS, Suite

BENCH_TIMEOUT_S = 180.0


def bench(suite: Suite, *args: str) -> tuple[int, str, str]:
    config = [] if suite.config_path is None else ["--config", str(suite.config_path)]
    result = suite.cli(
        "python", "-m", "paygate.bench", *config,
        "--supervisor-conf", str(suite.supervisor_conf), "--supervisor-dir", str(suite.dir),
        *args, timeout_s=BENCH_TIMEOUT_S,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.suite
def test_short_run_reports_rates_latencies_cpu_and_conserved_money(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bench.json"
    code, stdout, stderr = bench(
        suite, "--duration", "3", "--warmup", "1", "--concurrency", "8", "--out", str(out)
    )
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())

    payments, baseline = report["payments"], report["baseline"]
    for summary in (payments, baseline):
        assert summary["ok"] > 0
        assert summary["completed"] == sum(summary["outcomes"].values())
        latency = summary["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert payments["outcomes"] == {"OK": payments["ok"]}
    assert report["ratio"] > 0
    assert report["ratio"] == pytest.approx(payments["ok_per_s"] / baseline["ok_per_s"], abs=1e-3)
    assert baseline["cpu"]["echo-server"]["cpu_s"] > 0

    cpu = report["cpu"]
    assert set(cpu) == {"gateway", *BANKS, "bench"}
    assert all(cpu[name]["cpu_s"] > 0 for name in ("gateway", *BANKS)), cpu

    money = report["money"]
    assert money["ok"], money
    assert money["total_before_minor"] == money["total_after_minor"] > 0
    assert money["pending_after_minor"] == 0
    assert money["balances_match_acknowledged_payments"] == "ok"
    assert report["settings"]["concurrency"] == 8
    assert report["machine_load"]["busy_cores"] >= 0 <= report["machine_load"]["other_cores"]
    assert report["machine"]["nproc"] >= 1
    assert "ratio" in stdout and "money     ok" in stdout


@pytest.mark.suite
def test_unreachable_gateway_is_an_error_not_a_report(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "nowhere.toml"
    certs = suite.config.certs_dir
    config.write_text(f'certs_dir = "{certs}"\n[gateway]\nlisten = "127.0.0.1:{port}"\n')
    result = suite.cli(
        "python", "-m", "paygate.bench", "--config", str(config),
        "--out", str(tmp_path / "never.json"), timeout_s=BENCH_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "does not answer" in result.stderr
    assert not (tmp_path / "never.json").exists()


@pytest.mark.suite
def test_a_list_of_gateways_is_paid_through_and_named_programs_are_sampled(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bench.json"
    both = f"{suite.gateway_target},{suite.gateway_target}"  # a list, round robin
    code, stdout, stderr = bench(
        suite, "--gateway", both, "--programs", "gateway,bank-a", "--no-baseline",
        "--cpu-of-command", "supervisord", "--duration", "2", "--warmup", "0.5",
        "--concurrency", "4", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())
    assert report["settings"]["gateway"] == both
    assert report["payments"]["ok"] > 0 and report["money"]["ok"]
    assert set(report["cpu"]) == {"gateway", "bank-a", "supervisord", "bench"}
    assert report["cpu"]["supervisord"]["processes"] >= 1


def test_a_gateway_list_with_a_name_in_it_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--gateway", "127.0.0.1:1,localhost:2"]) == 2
    assert "--gateway: in a list of gateway addresses each must be IP:PORT" in (
        capsys.readouterr().err
    )


def test_cpu_of_a_command_is_summed_over_its_processes() -> None:
    cpu = {
        "gateway": {"pid": 1, "cpu_s": 2.0, "cores": 0.1},
        "postgres#7": {"pid": 7, "cpu_s": 1.5, "cores": 0.075},
        "postgres#8": {"pid": 8, "cpu_s": 0.5, "cores": 0.025},
        "postgres#9": {"pid": 9, "restarted": True},
    }
    folded = procstat.fold_commands(cpu)
    assert folded["gateway"] == cpu["gateway"]
    assert folded["postgres"] == {"processes": 2, "cpu_s": 2.0, "cores": 0.1}
    assert procstat.command_pids("") == {}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def _state(balance: int, pending_debit: int = 0, pending_credit: int = 0) -> AccountState:
    return AccountState(balance, pending_debit, pending_credit)


def test_money_check_holds_for_acknowledged_payments() -> None:
    before = {"a": _state(100), "b": _state(100)}
    after = {"a": _state(97), "b": _state(103)}
    result = check_money(before, after, {"a": -3, "b": 3}, unknown_outcomes=0)
    assert result["ok"], result


def test_money_check_fails_when_money_appears_or_stays_held() -> None:
    before = {"a": _state(100), "b": _state(100)}
    created = check_money(before, {"a": _state(100), "b": _state(101)}, {}, unknown_outcomes=0)
    assert not created["ok"]
    assert "total balance changed from 200 to 201" in created["problems"][0]
    held = check_money(before, {"a": _state(100, 5), "b": _state(100, 0, 5)}, {}, 1)
    assert not held["ok"]
    assert held["balances_match_acknowledged_payments"].startswith("skipped")


def test_money_check_fails_when_balances_disagree_with_acknowledged_payments() -> None:
    before = {"a": _state(100), "b": _state(100)}
    after = {"a": _state(99), "b": _state(101)}  # conserved, but the gateway said 2 moved
    result = check_money(before, after, {"a": -2, "b": 2}, unknown_outcomes=0)
    assert not result["ok"]
    assert "differ from the acknowledged payments" in result["problems"][0]
