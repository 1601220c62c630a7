"""paygate-bench: payments per second and tail latency of a running suite, with a baseline.

    paygate-bench --config paygate.toml --concurrency 64 --duration 20 --out bench.json

The modules, in the order a run uses them:

    cli.py       flags, the run's phases, the exit status
    users.py     funded bench users: accounts opened with the admin certificate, registered
                 and logged in at the gateway; their balances for the money check
    echo.py      the baseline's server: a trivial unary RPC over TLS on grpc.aio, in a
                 subprocess of its own (`python -m paygate.bench.echo`)
    load.py      C concurrent callers (payments, or the echo RPC) for a warm-up and a
                 measured window, in this process or in several
    procstat.py  CPU time and memory (RSS) of processes from /proc, pids from supervisorctl
    report.py    percentiles, the JSON report and the summary on one screen
    plot.py      the report drawn as a PNG: payments/s, the baseline's calls/s and latency,
                 second by second
    seed.py      `paygate-bench seed`: fills a stopped suite's SQLite files with many
                 accounts and finished payments, for the scale comparison
"""
