"""Fixtures of the suite tests: one option decides whether to start a suite or attach to one.

    pytest                                   start a fresh suite on free ports in a tmp dir
    pytest --attach default                  use the suite `make run` runs (default config)
    pytest --attach paygate.toml             use a running suite started with that config
    PAYGATE_TEST_ATTACH=paygate.toml pytest  the same, from the environment

When attaching, supervisorctl runs with --attach-supervisor-conf (default: the repository's
supervisord.conf) in --attach-dir (default: the repository root), the directory supervisord
was started from; the config's relative paths resolve against that directory too.

PAYGATE_TEST_BANKS_ONLY=1 waits only for the three banks (for work before the gateway exists).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from suite import BANKS, PROGRAMS, REPO, SUPERVISOR_CONF, Suite

ATTACH_ENV = "PAYGATE_TEST_ATTACH"
BANKS_ONLY_ENV = "PAYGATE_TEST_BANKS_ONLY"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("paygate suite")
    group.addoption(
        "--attach",
        metavar="CONFIG_TOML",
        default=os.environ.get(ATTACH_ENV) or None,
        help=f"attach to a running suite with this config ('default' for the built-in "
        f"defaults) instead of starting one (env {ATTACH_ENV})",
    )
    group.addoption(
        "--attach-supervisor-conf",
        metavar="CONF",
        default=str(SUPERVISOR_CONF),
        help="supervisord.conf of the suite to attach to (default: the repository's)",
    )
    group.addoption(
        "--attach-dir",
        metavar="DIR",
        default=str(REPO),
        help="the directory the attached suite's supervisord runs in (default: repo root)",
    )


@pytest.fixture(scope="session")
def suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Suite]:
    programs = BANKS if os.environ.get(BANKS_ONLY_ENV) == "1" else PROGRAMS
    attach = request.config.getoption("--attach")
    if attach:
        directory = pathlib.Path(request.config.getoption("--attach-dir")).resolve()
        config_path = None if attach == "default" else pathlib.Path(attach).resolve()
        yield Suite.attach(
            config_path,
            supervisor_conf=pathlib.Path(request.config.getoption("--attach-supervisor-conf")).resolve(),
            directory=directory,
            scratch=tmp_path_factory.mktemp("scratch"),
            programs=programs,
        )
        return
    started = Suite.start(tmp_path_factory.mktemp("suite"), programs=programs)
    try:
        yield started
    finally:
        started.stop()
