"""paygate-bench: a short run against the shared suite makes a complete report, and its
money check holds. Speed is measured by the bench, never asserted by a test.

The pure parts (percentiles, the money check, the memory numbers) are tested without a
suite, including that the money check does fail when money appears or stays held.

The seeding tool (paygate.bench.seed) runs against a suite of its own, which it stops and
starts: seeded payments must be served like real ones, and real payments go on working.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import sqlite3
from typing import Any

import matplotlib.image
import numpy
import pytest
from paygate.bench import plot, procstat
from paygate.bench.cli import main as bench_main
from paygate.bench.report import percentile
from paygate.bench.users import AccountState, check_money
from paygate.client import Client
from paygate.errors import PaygateError
from suite import BANKS, PROGRAMS, SHARED_GATEWAY_SETTINGS, Suite, started_suite

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

    memory = report["memory"]
    assert set(memory) == {"gateway", *BANKS}
    for name, numbers in memory.items():
        assert numbers["pid"] == cpu[name]["pid"]
        assert numbers["samples"] >= 3, numbers  # every second of a 3 s window, and its end
        assert 10 < numbers["rss_start_mib"] < 4096 and 10 < numbers["rss_end_mib"] < 4096
        assert numbers["rss_max_mib"] >= max(numbers["rss_start_mib"], numbers["rss_end_mib"])
        assert numbers["growth_mib"] == pytest.approx(
            numbers["rss_end_mib"] - numbers["rss_start_mib"], abs=0.02
        )
        assert isinstance(numbers["slope_mib_per_min"], float)
        assert numbers["series_mib"][0][1] == numbers["rss_start_mib"]
        assert numbers["series_mib"][-1][1] == numbers["rss_end_mib"]
    assert report["settings"]["memory_interval_s"] == 1.0
    assert "memory    gateway" in stdout

    # Each payment of the window prepared and committed at one or two banks: the batches
    # carried at least one call per payment and phase, and never fewer calls than RPCs.
    batches = report["batches"]
    assert set(batches) >= {"prepare", "commit"}, batches
    for operation in ("prepare", "commit"):
        numbers = batches[operation]
        assert numbers["calls"] >= payments["ok"] * 0.9, (operation, numbers, payments["ok"])
        assert numbers["calls"] >= numbers["rpcs"] > 0
        per_rpc = numbers["calls"] / numbers["rpcs"]
        assert numbers["calls_per_rpc"] == pytest.approx(per_rpc, abs=0.01)
    assert "batches   " in stdout

    # Per second of the window: every completed call counted once.
    by_second = payments["latency_by_second"]
    assert sum(s["count"] for s in by_second) == payments["completed"]
    slowest = payments["latency_ms"]["max"] + 0.05  # the seconds' numbers are rounded to 0.1
    assert [s["second"] for s in by_second] == list(range(len(by_second)))
    assert all(0 < s["p50"] <= s["p99"] <= s["max"] <= slowest for s in by_second if s["count"])
    assert sum(s["ok"] for s in by_second) == payments["ok"]

    # The plot, beside the report: the run's own numbers, second by second.
    lines = check_plot(report, tmp_path / "bench.png")
    assert sum(lines[plot.PAYMENTS_LABEL][1]) == pytest.approx(payments["ok"])
    assert sum(lines[plot.BASELINE_LABEL][1]) == pytest.approx(baseline["ok"])
    assert "plot:   " + str(tmp_path / "bench.png") in stdout


@pytest.mark.suite
def test_the_ceiling_looks_up_payments_through_the_gateway_alone(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bench.json"
    code, stdout, stderr = bench(
        suite, "--ceiling", "--duration", "2", "--warmup", "0.5", "--concurrency", "4",
        "--out", str(out),
    )
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())

    ceiling, baseline = report["ceiling"], report["baseline"]
    assert ceiling["ok"] > 0 and ceiling["outcomes"] == {"OK": ceiling["ok"]}, ceiling
    assert report["ceiling_ratio"] == pytest.approx(
        ceiling["ok_per_s"] / baseline["ok_per_s"], abs=1e-3
    )
    assert report["settings"]["ceiling"] is True
    assert report["payments_per_ceiling"] == pytest.approx(
        report["payments"]["ok_per_s"] / ceiling["ok_per_s"], abs=1e-3
    )
    # The gateway served every lookup itself: no bank did the work of a call.
    cpu = ceiling["cpu"]
    assert cpu["gateway"]["cpu_s"] > 0
    for bank in BANKS:
        assert cpu[bank]["cpu_s"] < cpu["gateway"]["cpu_s"] / 5, cpu
    assert ceiling["cpu_ms_per_call"]["gateway"] == pytest.approx(
        cpu["gateway"]["cpu_s"] * 1000 / ceiling["ok"], abs=1e-3
    )
    # The payments made for the lookups went round a ring: every balance is where it began.
    money = report["money"]
    assert money["ok"] and money["balances_match_acknowledged_payments"] == "ok", money
    assert "ceiling   GetPayment calls/s / baseline calls/s" in stdout
    lines = check_plot(report, tmp_path / "bench.png")
    assert sum(lines[plot.CEILING_LABEL][1]) == pytest.approx(ceiling["ok"])


@pytest.mark.suite
def test_a_bulk_run_counts_the_payments_of_its_batches(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bench.json"
    code, stdout, stderr = bench(
        suite, "--batch-size", "25", "--duration", "2", "--warmup", "0.5", "--concurrency", "2",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())
    calls, bulk = report["payments"], report["bulk"]
    assert report["settings"]["batch_size"] == 25
    assert calls["ok"] > 0 and calls["outcomes"] == {"OK": calls["ok"]}
    # Every call of the window paid its 25 payees: 25 payments a call.
    assert bulk["items_ok"] == bulk["items"] == 25 * calls["completed"], (bulk, calls)
    assert bulk["item_outcomes"] == {"OK": bulk["items_ok"]}
    assert bulk["items_ok_per_s"] == pytest.approx(bulk["items_ok"] / calls["window_s"], abs=0.1)
    assert bulk["items_ratio"] == pytest.approx(
        bulk["items_ok_per_s"] / report["baseline"]["ok_per_s"], abs=1e-3
    )
    assert report["cpu_ms_per_payment"]["gateway"] == pytest.approx(
        report["cpu"]["gateway"]["cpu_s"] * 1000 / bulk["items_ok"], abs=1e-3
    )
    money = report["money"]
    assert money["ok"] and money["balances_match_acknowledged_payments"] == "ok", money
    assert "bulk      25 payments a call" in stdout
    lines = check_plot(report, tmp_path / "bench.png")
    assert sum(lines[plot.PAYMENTS_LABEL][1]) == pytest.approx(bulk["items_ok"])
    assert sum(lines[plot.CALLS_LABEL][1]) == pytest.approx(calls["ok"])


@pytest.mark.suite
def test_a_split_run_pays_three_payees_at_three_banks_each_payment(
    suite: Suite, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bench.json"
    code, stdout, stderr = bench(
        suite, "--splits", "3", "--amount", "10", "--duration", "2", "--warmup", "0.5",
        "--concurrency", "4", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())
    payments, splits, baseline = report["payments"], report["splits"], report["baseline"]
    assert report["settings"]["splits"] == 3 and report["settings"]["amount_minor"] == 10
    assert report["settings"]["users"] == 6  # two a bank, though only 4 pay
    assert payments["ok"] > 0 and payments["outcomes"] == {"OK": payments["ok"]}
    assert splits["payees"] == 3 and splits["payees_at_distinct_banks"] is True
    assert (splits["ok"], splits["ok_per_s"]) == (payments["ok"], payments["ok_per_s"])
    assert splits["ratio"] == pytest.approx(payments["ok_per_s"] / baseline["ok_per_s"], abs=1e-3)
    money = report["money"]
    assert money["ok"] and money["balances_match_acknowledged_payments"] == "ok", money
    assert "splits    3 payees a payment, at distinct banks: " in stdout
    check_plot(report, tmp_path / "bench.png")
    assert "split payments to 3 payees" in plot.title(report)

    # As the gateway recorded them: each of the run's payments paid 4 + 3 + 3 to three
    # payees at the three banks.
    gateway = suite.config.gateway.database
    if not isinstance(gateway, pathlib.Path):
        return  # a suite on PostgreSQL: the report's numbers above are the test
    rows = query(
        gateway, "SELECT amount, splits FROM payments WHERE payer_username LIKE 'bench-%'"
        " AND splits IS NOT NULL AND status = 'succeeded'",
    )  # fmt: skip
    assert len(rows) >= payments["ok"]
    for amount, parts_json in rows:
        parts = json.loads(parts_json)
        assert amount == 10 and [part[4] for part in parts] == [4, 3, 3], parts
        assert sorted(part[2] for part in parts) == sorted(BANKS), parts


def test_split_flags_out_of_their_limits_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for flags, message in [
        (["--splits", "11"], "--splits: 2 to 10"),
        (["--splits", "3", "--batch-size", "5"], "--splits: not with --batch-size"),
        (["--splits", "3", "--amount", "2"], "--amount: at least --splits"),
        (["--splits", "3", "--users", "3"], "--users: more than --splits"),
        (["--out", "run.json", "--plot", "run.json"], "--plot: not the report's own file"),
    ]:
        assert bench_main(flags) == 2, flags
        assert message in capsys.readouterr().err, flags


def test_a_batch_size_over_the_gateways_limit_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_main(["--batch-size", "1001"]) == 2
    assert "--batch-size: 1 to 1000" in capsys.readouterr().err


@pytest.mark.suite
def test_a_run_longer_than_a_token_logs_in_again(tmp_path: pathlib.Path) -> None:
    # Tokens live 2 s here: they expire in the middle of the measured window.
    settings = {**SHARED_GATEWAY_SETTINGS, "token_ttl_s": 2}
    with started_suite(tmp_path / "suite", gateway_settings=settings) as suite:
        out = tmp_path / "bench.json"
        code, stdout, stderr = bench(
            suite, "--duration", "4", "--warmup", "0.5", "--concurrency", "4",
            "--no-baseline", "--ceiling", "--out", str(out),
        )
        assert code == 0, stdout + stderr
        report = json.loads(out.read_text())
        for phase in ("ceiling", "payments"):
            summary = report[phase]
            assert summary["ok"] > 0 and summary["outcomes"] == {"OK": summary["ok"]}, summary
        assert "money     ok" in stdout


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
        "--concurrency", "4", "--out", str(out), "--plot", str(tmp_path / "elsewhere" / "run.png"),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())
    assert report["settings"]["gateway"] == both
    lines = check_plot(report, tmp_path / "elsewhere" / "run.png")  # --plot
    assert plot.BASELINE_LABEL not in lines and "no baseline" in plot.title(report)
    assert not (tmp_path / "bench.png").exists()
    assert report["payments"]["ok"] > 0 and report["money"]["ok"]
    assert set(report["cpu"]) == {"gateway", "bank-a", "supervisord", "bench"}
    assert report["cpu"]["supervisord"]["processes"] >= 1


def check_plot(
    report: dict[str, Any], png: pathlib.Path
) -> dict[str, tuple[list[float], list[float]]]:
    """The run's PNG is the drawing of its report, and that drawing's lines are the report's
    per-second numbers (of full seconds: every window here lasts a whole number of them).
    Returns the lines, (seconds, values) by label."""
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    again = png.with_name("again.png")
    plot.write(report, again)
    drawn, redrawn = matplotlib.image.imread(png), matplotlib.image.imread(again)
    assert drawn.shape == redrawn.shape == (850, 1100, 4)
    assert numpy.array_equal(drawn, redrawn)  # the PNG shows this report, not another run's

    figure = plot.draw(report)
    lines = {
        str(line.get_label()): (list(map(float, line.get_xdata())),
                                list(map(float, line.get_ydata())))
        for axes in figure.axes
        for line in axes.get_lines()
    }  # fmt: skip
    settings = report["settings"]
    assert figure.get_suptitle().startswith(
        f"paygate-bench: concurrency {settings['concurrency']}, rate as fast as possible, "
        f"batch size {settings['batch_size']}"
    )
    for label, phase in [
        (plot.BASELINE_LABEL, "baseline"), (plot.CEILING_LABEL, "ceiling"),
        (plot.CALLS_LABEL if report["bulk"] else plot.PAYMENTS_LABEL, "payments"),
    ]:  # fmt: skip
        if report[phase]:
            seconds = report[phase]["latency_by_second"]
            assert lines[label] == ([s["second"] + 0.5 for s in seconds],
                                    [float(s["ok"]) for s in seconds]), label  # fmt: skip
    seconds = report["payments"]["latency_by_second"]
    if report["bulk"]:
        assert lines[plot.PAYMENTS_LABEL][1] == report["bulk"]["items_ok_by_second"]
    for label, key in [(plot.P50_LABEL, "p50"), (plot.P99_LABEL, "p99")]:
        xs, ys = lines[label]
        assert xs == [s["second"] + 0.5 for s in seconds]  # the middle of each second
        for second, value in zip(seconds, ys, strict=True):
            assert value == second[key] if second["count"] else math.isnan(value), (label, second)
    return lines


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


def test_memory_numbers_of_a_window() -> None:
    mib = procstat.MIB
    series = procstat.MemorySeries({"grows": 1, "flat": 2, "gone": 3})
    series.times_s = [0.0, 1.0, 2.0, 3.0, 4.0]
    # Warm-up growth in the first half is not in the slope; 1 MiB/s after it is 60 MiB/min.
    series.rss = {
        "grows": [100 * mib, 150 * mib, 200 * mib, 201 * mib, 202 * mib],
        "flat": [50 * mib] * 5,
        "gone": [50 * mib, 50 * mib, None, None, None],
    }
    memory = procstat.memory_window(series, {"grows": 1, "flat": 2, "gone": 3})
    grows = memory["grows"]
    assert (grows["rss_start_mib"], grows["rss_end_mib"], grows["rss_max_mib"]) == (100, 202, 202)
    assert grows["growth_mib"] == 102
    assert grows["slope_mib_per_min"] == pytest.approx(60.0)
    assert memory["flat"]["slope_mib_per_min"] == 0.0 and memory["flat"]["growth_mib"] == 0
    assert memory["gone"] == {"pid": 3, "restarted": True}
    restarted = procstat.memory_window(series, {"grows": 9, "flat": 2, "gone": 3})["grows"]
    assert restarted == {"pid": 1, "restarted": True}
    assert procstat.slope_per_s([1.0], [5.0]) is None


def test_rss_of_this_process_and_of_none() -> None:
    rss = procstat.rss_bytes(os.getpid())
    assert rss is not None and rss > 1024 * 1024
    assert procstat.rss_bytes(2**31 - 1) is None  # past any pid_max: no such process
    assert procstat.memory_interval_s(10.0) == 1.0
    assert procstat.memory_interval_s(3600.0 * 10) > 1.0


# Seeding ---------------------------------------------------------------------------------

SEED_ACCOUNTS = 300
SEED_PAYMENTS = 3000
SEED_PREFIX = "seeded-"
SEED_PASSWORD = "seeded-users-password"
SEED_TIMEOUT_S = 120.0
START_TIMEOUT_S = 60.0


def seed(suite: Suite, *args: str) -> tuple[int, str, str]:
    result = suite.cli(
        "python", "-m", "paygate.bench", "seed", "--config", str(suite.config_path),
        "--supervisor-dir", str(suite.dir), "--accounts", str(SEED_ACCOUNTS),
        "--payments", str(SEED_PAYMENTS), "--chunk", "1000", "--prefix", SEED_PREFIX, *args,
        env={**suite.env(), "PAYGATE_SEED_PASSWORD": SEED_PASSWORD}, timeout_s=SEED_TIMEOUT_S,
    )
    return result.returncode, result.stdout, result.stderr


def read_only(path: pathlib.Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def query(path: pathlib.Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = read_only(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def nulls(row: tuple[Any, ...]) -> list[bool]:
    return [value is None for value in row]


@pytest.mark.suite
def test_seeded_payments_are_served_and_real_payments_still_work(tmp_path: pathlib.Path) -> None:
    with started_suite(tmp_path / "suite") as suite:
        code, _, stderr = seed(suite)
        assert code == 2 and "stop its programs first" in stderr, stderr  # files in use

        assert suite.supervisorctl("stop", "all").returncode == 0
        code, stdout, stderr = seed(suite)
        assert code == 0, stdout + stderr
        summary = json.loads(stdout)
        assert summary["audit"] == "passed" and summary["payments"] == SEED_PAYMENTS
        assert summary["rows"]["gateway"]["payment_parties"] == 2 * SEED_PAYMENTS
        money = summary["money_minor"]
        assert money["after"] == money["before"] + SEED_ACCOUNTS * 1_000_000

        assert suite.supervisorctl("start", "all").returncode == 0
        # A bank reports SERVING only once its full audit at start has passed.
        suite.wait_all_serving(PROGRAMS, timeout_s=START_TIMEOUT_S)
        check_seeded_files(suite)
        check_seeded_payments_are_served(suite)


def check_seeded_files(suite: Suite) -> None:
    files = [suite.config.gateway.database, *(b.database for b in suite.config.banks.values())]
    for path in files:
        assert isinstance(path, pathlib.Path)
        assert query(path, "PRAGMA foreign_key_check") == [], path
        assert query(path, "PRAGMA integrity_check") == [("ok",)], path
    gateway = suite.config.gateway.database
    assert isinstance(gateway, pathlib.Path)
    (users,) = query(gateway, "SELECT COUNT(*) FROM users WHERE username LIKE 'seeded-%'")
    assert users == (SEED_ACCOUNTS,)
    # Kept keys: created within the TTL, so the gateway's housekeeping left every one.
    (keys,) = query(gateway, "SELECT COUNT(*) FROM idempotency_keys WHERE state = 'completed'")
    assert keys[0] >= SEED_PAYMENTS


def check_seeded_payments_are_served(suite: Suite) -> None:
    gateway = suite.config.gateway.database
    assert isinstance(gateway, pathlib.Path)
    payer, payee = f"{SEED_PREFIX}0", f"{SEED_PREFIX}1"
    expected = [row[0] for row in query(
        gateway, "SELECT p.payment_id FROM payment_parties pp JOIN payments p ON p.seq = pp.seq"
        " JOIN users u ON u.user_id = pp.user_id WHERE u.username = ? ORDER BY p.seq DESC", payer,
    )]
    assert len(expected) >= 5  # about 2 x 3000 / 300 = 20
    ca = suite.config.certs_dir / "ca.pem"
    with Client(suite.gateway_target, ca_cert=ca, timeout_s=10) as client:
        client.login(payer, SEED_PASSWORD)
        listed = list(client.iter_payments(page_size=7))
        assert [p.payment_id for p in listed] == expected  # newest first, over pages
        one = client.get_payment(expected[-1])
        assert one.status.name == "SUCCEEDED" and one.description == "seeded"
        assert payer in (one.payer_username, one.payee_username) and one.amount_minor > 0

        # A seeded key is a real one: the same request again replays the seeded payment.
        key, payee_name, amount = query(
            gateway, "SELECT k.idempotency_key, p.payee_username, p.amount FROM idempotency_keys k"
            " JOIN payments p ON p.payment_id = k.payment_id JOIN users u"
            " ON u.user_id = k.user_id WHERE u.username = ? LIMIT 1", payer,
        )[0]
        before = client.balance().balance_minor
        replay = client.pay(payee_name, amount, description="seeded", idempotency_key=key)
        assert replay.payment_id in expected and client.balance().balance_minor == before
        with pytest.raises(PaygateError):  # same key, other parameters
            client.pay(payee_name, amount + 1, description="seeded", idempotency_key=key)

        paid = client.pay(payee, 123)
        assert paid.status.name == "SUCCEEDED"
        assert client.balance().balance_minor == before - 123
        assert client.list_payments(page_size=1)[0][0].payment_id == paid.payment_id

    # The real payment's rows have the seeded ones' shape (the same columns set or NULL).
    real, seeded = (query(gateway, "SELECT * FROM payments WHERE payment_id = ?", pid)[0]
                    for pid in (paid.payment_id, expected[0]))
    assert nulls(real) == nulls(seeded)
    real_keys, seeded_keys = (query(gateway, "SELECT * FROM idempotency_keys WHERE payment_id = ?",
                                    pid)[0] for pid in (paid.payment_id, expected[0]))
    assert nulls(real_keys) == nulls(seeded_keys) and real_keys[3] == seeded_keys[3]
    for bank in suite.config.banks.values():
        assert isinstance(bank.database, pathlib.Path)
        rows = {pid: query(bank.database, "SELECT * FROM transactions WHERE transaction_id = ?",
                           pid) for pid in (paid.payment_id, expected[0])}
        for found in rows.values():
            assert not found or (found[0][1] == "committed" and found[0][5] is not None)
