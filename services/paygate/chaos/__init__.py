"""paygate-chaos: Jepsen's bank test, built in, against a running Paygate suite.

    workload.py     funded users and concurrent clients paying each other, with retries
    many_payees.py  split payments and bulk payouts (BatchCreatePayments) of the workload
    calls.py        the request of an intent, and what an answer means (a Call)
    observer.py     reads of every account at its bank, during the run and after recovery
    faults.py       the fault schedule, through the suite's supervisord
    history.py      the record of a run, plain data
    journals.py     the banks' journal entries of the split payments, read after recovery
    checker.py      pure functions over the history: the claims and their violations
                    (with refund_checks.py, event_checks.py, split_checks.py)
    report.py       summary, results.json, history.json, chaos.png
    cli.py          the command (`paygate-chaos --help`)

See docs/chaos.md for how to run it and read its results.
"""
