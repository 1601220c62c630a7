"""ops/supervisord-relay.conf, the switch that runs paygate-relay: supervisord reads it as
supervisord.conf's four programs and the relay, and supervisorctl reaches the same socket."""

from __future__ import annotations

import os
import pathlib

import pytest
from supervisor.options import ClientOptions, ServerOptions

REPO = pathlib.Path(__file__).resolve().parents[2]
RELAY_CONF = REPO / "ops" / "supervisord-relay.conf"
MAIN_CONF = REPO / "supervisord.conf"


def programs(conf: pathlib.Path) -> dict[str, str]:
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    return {p.name: p.command for g in options.process_group_configs for p in g.process_configs}


def serverurl(conf: pathlib.Path) -> str:
    options = ClientOptions()
    options.realize(args=["-c", str(conf)])
    return str(options.serverurl)


def test_the_relay_runs_beside_the_suites_programs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "var" / "log").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # var/ is relative to where supervisord starts
    with_relay, without = programs(RELAY_CONF), programs(MAIN_CONF)
    assert with_relay.keys() - without.keys() == {"relay"}
    assert {name: with_relay[name] for name in without} == without
    relay = pathlib.Path(with_relay["relay"])
    assert relay.resolve() == (REPO / ".venv" / "bin" / "paygate-relay").resolve()
    assert os.access(relay, os.X_OK)
    assert serverurl(RELAY_CONF) == serverurl(MAIN_CONF)
