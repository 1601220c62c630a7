"""Run paygate-bench against a suite started for the run, then stop it.

    .venv/bin/python ops/bench_fresh_suite.py --concurrency 64 --duration 20 --warmup 5 \
        --out bench.json

Every number in docs/performance.md comes from this script. It starts the repository's
supervisord.conf on free ports in a temporary directory (the test harness, tests/suite.py),
with the production settings that matter: durability, TLS, every interceptor, and no fault
injection (the tests switch that on; it adds a stat() per crash point). Its arguments go to
paygate-bench unchanged. Run it from the repository root, after `make setup`.

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
import subprocess
import sys
import tempfile
from collections.abc import Mapping

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import suite as harness  # noqa: E402  (the test harness, from tests/)

SEED_TIMEOUT_S = 3600
BENCH_TIMEOUT_S = 7200


_write_config = harness.write_config


def write_config_without_faults(
    folder: pathlib.Path,
    gateway_settings: Mapping[str, object] = harness.SHARED_GATEWAY_SETTINGS,
    database_urls: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """The harness's config, with fault injection off as in production."""
    path = _write_config(folder, gateway_settings, database_urls)
    text = path.read_text().replace("fault_injection = true", "fault_injection = false")
    path.write_text(text)
    return path


harness.write_config = write_config_without_faults


def main() -> int:
    tree = os.environ.get("BENCH_PYTHONPATH")
    extra_env: dict[str, str] = {
        **({"PYTHONPATH": tree} if tree else {}),
        **json.loads(os.environ.get("BENCH_ENV", "{}")),
    }
    settings = {
        **harness.SHARED_GATEWAY_SETTINGS,
        **json.loads(os.environ.get("BENCH_GATEWAY", "{}")),
    }
    python = str(harness.BIN / "python")
    with tempfile.TemporaryDirectory(prefix="paygate-bench-") as folder:
        suite = harness.Suite.start(
            pathlib.Path(folder), extra_env=extra_env, gateway_settings=settings
        )
        try:
            config = ["--config", str(suite.config_path), "--supervisor-dir", str(suite.dir)]
            seed = os.environ.get("BENCH_SEED")
            if seed:
                # The seeder writes the files of the version that will read them.
                seed_env = {**suite.env(), **(extra_env or {})}
                if suite.supervisorctl("stop", "all").returncode != 0:
                    raise SystemExit("could not stop the suite's programs to seed them")
                subprocess.run(
                    [python, "-m", "paygate.bench", "seed", *config, *shlex.split(seed)],
                    cwd=suite.dir, env=seed_env, timeout=SEED_TIMEOUT_S, check=True,
                )
                if suite.supervisorctl("start", "all").returncode != 0:
                    raise SystemExit("could not start the suite's programs after seeding")
                suite.wait_all_serving(harness.PROGRAMS, timeout_s=300)
            result = subprocess.run(
                [python, "-m", "paygate.bench", *config,
                 "--supervisor-conf", str(suite.supervisor_conf), *sys.argv[1:]],
                cwd=suite.dir, env=suite.env(), timeout=BENCH_TIMEOUT_S, check=False,
            )
        finally:
            suite.stop()
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
