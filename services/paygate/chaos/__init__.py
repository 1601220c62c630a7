"""paygate-chaos: Jepsen's bank test, built in, against a running Paygate suite.

    workload.py     funded users and concurrent clients paying each other, with retries
    observer.py     reads of every account at its bank, during the run and after recovery
    faults.py       the fault schedule, through the suite's supervisord
    history.py      the record of a run, plain data
    checker.py      pure functions over the history: the claims and their violations
    report.py       summary, results.json, history.json, chaos.png
    cli.py          the command (`paygate-chaos --help`)

See docs/chaos.md for how to run it and read its results.
"""
