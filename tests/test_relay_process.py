"""`paygate-relay` as a process: with its broker down it keeps running, says so in its log
(never the broker's password), tries again with bounded backoff, and reports it on
/healthz and /metrics; SIGTERM stops it cleanly.

Needs no broker: the relay is pointed at a port where none listens.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import urllib.error
import urllib.request

from suite import BIN, free_ports
from users import eventually

STOP_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 2.0
PASSWORD = "n0t-Guest-pw"


def start(tmp_path: pathlib.Path, config: str) -> subprocess.Popen[bytes]:
    path = tmp_path / "paygate.toml"
    path.write_text(config)
    with (tmp_path / "relay.log").open("wb") as log:
        return subprocess.Popen(
            [str(BIN / "paygate-relay"), "--config", str(path)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(STOP_TIMEOUT_S)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_with_its_broker_down_it_keeps_trying_says_why_and_is_unhealthy(
    tmp_path: pathlib.Path,
) -> None:
    closed, metrics = free_ports(2)
    process = start(
        tmp_path,
        f'[relay]\namqp_url = "amqp://paygate:{PASSWORD}@127.0.0.1:{closed}/"\n'
        f'metrics = "127.0.0.1:{metrics}"\nreconnect_max_s = 0.5\n',
    )
    log = tmp_path / "relay.log"
    try:

        def failed_three_times() -> bool:
            return log.read_text().count('"msg":"broker unavailable; trying again"') >= 3

        eventually(failed_three_times, timeout_s=20.0)
        assert process.poll() is None  # still running: no crash, no restart loop
        status, body = get(f"http://127.0.0.1:{metrics}/healthz")
        assert status == 503
        assert json.loads(body) == {"healthy": False, "database": True, "broker": False}
        status, body = get(f"http://127.0.0.1:{metrics}/metrics")
        text = body.decode()
        assert status == 200 and "paygate_relay_broker_connected 0.0" in text
        assert 'paygate_relay_failures_total{kind="broker"}' in text
        assert (
            "paygate_relay_lease_held 0.0" in text
        )  # a relay without its broker publishes nothing
    finally:
        status = stop(process)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert status == 0
    assert PASSWORD not in log.read_text()
    retries = [line for line in lines if line["msg"] == "broker unavailable; trying again"]
    assert all(line["retry_in_s"] <= 0.5 for line in retries)  # bounded by reconnect_max_s
    assert f"Connect call failed ('127.0.0.1', {closed})" in retries[0]["error"]
    assert lines[-1]["msg"] == "stopped"
