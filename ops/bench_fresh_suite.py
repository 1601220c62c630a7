"""Run paygate-bench against a suite started for the run, then stop it.

    .venv/bin/python ops/bench_fresh_suite.py --concurrency 64 --duration 20 --warmup 5 \
        --out bench.json

Every number in docs/performance.md comes from this script. It starts the repository's
supervisord.conf on free ports in a temporary directory, with its own certificates
(ops/gen_certs.py) and the production settings that matter: durability, TLS, every
interceptor, and no fault injection (the tests switch that on; it adds a stat() per crash
point). Its arguments go to paygate-bench unchanged. Run it from the repository root, after
`make setup`.

Environment:

    BENCH_PYTHONPATH   a services/ directory whose paygate package the suite runs instead of
                       the working tree's (to measure another commit:
                       `git archive <commit> services | tar -x -C /tmp/vN`); the bench
                       itself is always the working tree's
    BENCH_GATEWAY      JSON of extra [gateway] settings, e.g. '{"batch_max_in_flight": 1}'
    BENCH_ENV          JSON of environment variables for the suite's programs, e.g. to
                       export spans: '{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}'
                       (ops/otlp_sink.py is a receiver for that)
    BENCH_SEED         arguments for `paygate-bench seed` (e.g. "--accounts 100000
                       --payments 1000000"): the programs are stopped, the databases seeded,
                       and the programs started again before the bench runs
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

import gen_certs  # ops/gen_certs.py, beside this script
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paygate.common.config import CONFIG_ENV, SuiteConfig, read_config_file
from paygate.common.tls import channel_credentials

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
SUPERVISOR_CONF = REPO / "supervisord.conf"
DEMO_ACCOUNTS = REPO / "ops" / "demo-accounts"
GATEWAY = "gateway"
BANKS = ("bank-a", "bank-b", "bank-c")
PROGRAMS = (*BANKS, GATEWAY)

SEED_TIMEOUT_S = 3600
BENCH_TIMEOUT_S = 7200
START_TIMEOUT_S = 60.0
SEEDED_START_TIMEOUT_S = 300.0
SUPERVISORCTL_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 40.0  # supervisord stops each program within stopwaitsecs=15
HEALTH_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.2
# The bench logs its users in at once, from 127.0.0.1: the login throttle counts attempts
# in flight as failures ahead, so its per-address limit would refuse some of them.
GATEWAY_SETTINGS: Mapping[str, object] = {"login_max_failures_per_address": 1_000_000}


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free on 127.0.0.1 now (all held open together, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_config(folder: pathlib.Path, gateway_settings: Mapping[str, object]) -> pathlib.Path:
    """folder/paygate.toml: every process on a free port, its files under folder."""
    ports = iter(free_ports(3 + 2 * len(BANKS)))
    lines = [
        'var_dir = "var"',
        'certs_dir = "certs"',
        "fault_injection = false",
        "",
        "[gateway]",
        f'listen = "127.0.0.1:{next(ports)}"',
        f'metrics = "127.0.0.1:{next(ports)}"',
        f'admin_listen = "127.0.0.1:{next(ports)}"',
        "bcrypt_rounds = 4",  # the bench users' logins happen before the measured window
        # JSON writes true/false, numbers and double-quoted strings as TOML does.
        *(f"{key} = {json.dumps(value)}" for key, value in gateway_settings.items()),
    ]
    for bank_id in BANKS:
        lines += [
            "",
            f"[banks.{bank_id}]",
            f'listen = "127.0.0.1:{next(ports)}"',
            f'metrics = "127.0.0.1:{next(ports)}"',
            f"demo_accounts = {json.dumps(str(DEMO_ACCOUNTS / f'{bank_id}.toml'))}",
        ]
    path = folder / "paygate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class FreshSuite:
    """supervisord with the repository's supervisord.conf, run in `folder` for one bench."""

    def __init__(self, folder: pathlib.Path, config_path: pathlib.Path) -> None:
        self.dir = folder
        self.config_path = config_path
        self.config: SuiteConfig = read_config_file(config_path, base=folder)

    def env(self) -> dict[str, str]:
        return {**os.environ, CONFIG_ENV: str(self.config_path)}

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(SUPERVISOR_CONF), *args],
            cwd=self.dir, env=self.env(), capture_output=True, text=True,
            timeout=SUPERVISORCTL_TIMEOUT_S, check=False,
        )

    def start(self, extra_env: Mapping[str, str]) -> None:
        (self.dir / "var" / "log").mkdir(parents=True, exist_ok=True)
        # supervisord forks, and this first process exits once the daemon runs.
        started = subprocess.run(
            [str(BIN / "supervisord"), "-c", str(SUPERVISOR_CONF)],
            cwd=self.dir, env={**self.env(), **extra_env}, capture_output=True, text=True,
            timeout=SUPERVISORCTL_TIMEOUT_S, check=False,
        )
        if started.returncode != 0:
            raise SystemExit(f"supervisord exited with {started.returncode}: {started.stderr}")

    def wait_serving(self, timeout_s: float) -> None:
        """Wait until every program answers its health check with SERVING."""
        deadline = time.monotonic() + timeout_s
        for program in PROGRAMS:
            while not self._serving(program):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{program} did not report SERVING within {timeout_s} s")
                time.sleep(POLL_INTERVAL_S)

    def _serving(self, program: str) -> bool:
        ca = self.config.certs_dir / "ca.pem"
        if program == GATEWAY:
            listen, credentials = self.config.gateway.listen, channel_credentials(ca)
        else:
            client = self.config.tls_for("admin")
            listen = self.config.banks[program].listen
            credentials = channel_credentials(ca, client=client)
        with grpc.secure_channel(listen, credentials) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S
                )
            except grpc.RpcError:
                return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        """Shut supervisord down; it returns once every program has stopped."""
        result = self.supervisorctl("shutdown")
        if result.returncode != 0:
            print(f"supervisorctl shutdown: {result.stdout}{result.stderr}", file=sys.stderr)
        pidfile = self.dir / "var" / "supervisord.pid"
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)


def seed(suite: FreshSuite, python: str, config: list[str], arguments: str,
         extra_env: Mapping[str, str]) -> None:
    """Stop the programs, seed their databases, start them again."""
    if suite.supervisorctl("stop", "all").returncode != 0:
        raise SystemExit("could not stop the suite's programs to seed them")
    # The seeder writes the files of the version that will read them.
    subprocess.run(
        [python, "-m", "paygate.bench", "seed", *config, *shlex.split(arguments)],
        cwd=suite.dir, env={**suite.env(), **extra_env}, timeout=SEED_TIMEOUT_S, check=True,
    )
    if suite.supervisorctl("start", "all").returncode != 0:
        raise SystemExit("could not start the suite's programs after seeding")
    suite.wait_serving(SEEDED_START_TIMEOUT_S)


def main() -> int:
    tree = os.environ.get("BENCH_PYTHONPATH")
    extra_env: dict[str, str] = {
        **({"PYTHONPATH": tree} if tree else {}),
        **json.loads(os.environ.get("BENCH_ENV", "{}")),
    }
    settings = {**GATEWAY_SETTINGS, **json.loads(os.environ.get("BENCH_GATEWAY", "{}"))}
    python = str(BIN / "python")
    with tempfile.TemporaryDirectory(prefix="paygate-bench-") as name:
        folder = pathlib.Path(name)
        gen_certs.generate(folder / "certs")
        suite = FreshSuite(folder, write_config(folder, settings))
        suite.start(extra_env)
        try:
            suite.wait_serving(START_TIMEOUT_S)
            config = ["--config", str(suite.config_path), "--supervisor-dir", str(suite.dir)]
            arguments = os.environ.get("BENCH_SEED")
            if arguments:
                seed(suite, python, config, arguments, extra_env)
            result = subprocess.run(
                [python, "-m", "paygate.bench", *config,
                 "--supervisor-conf", str(SUPERVISOR_CONF), *sys.argv[1:]],
                cwd=suite.dir, env=suite.env(), timeout=BENCH_TIMEOUT_S, check=False,
            )
        finally:
            suite.stop()
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
