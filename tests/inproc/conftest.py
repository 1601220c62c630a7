"""Fixtures of the in-process tier: one suite of real servers per test module.

Each module gets the gateway and three banks built by their own factories in this process
(tests/inproc/servers.py), on free ports, with SQLite files in the module's tmp dir and the
certificates made once per session. Tests of a module share its servers, as the suite tests
share their processes: every test makes its own users and accounts.

The fixture is named `suite`, as the one of tests/conftest.py it overrides here, so that a
suite test that needs no process to die or restart runs in this tier unchanged.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
import servers as tier
from servers import Servers
from suite import load_gen_certs

TIER = pathlib.Path(__file__).parent


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Note a run of part of the tier (-k, --lf): test_zz_every_rpc.py has nothing to check."""
    if any(TIER in item.path.parents for item in items):
        tier.PARTIAL_RUN = True


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("inproc-certs")
    load_gen_certs().generate(folder)
    return folder


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, certs_dir: pathlib.Path) -> Iterator[Servers]:
    servers = Servers.start(tmp_path_factory.mktemp("inproc"), certs_dir)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def servers(suite: Servers) -> Servers:
    """The module's servers, by the name the tier's own tests use."""
    return suite
