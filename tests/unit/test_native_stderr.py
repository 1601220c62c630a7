"""paygate.common.native_stderr: what native code writes to standard error becomes JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys

from paygate.common.native_stderr import as_json_line

GLOG_LINE = (
    "E1207 21:57:58.472104   10775 ssl_transport_security.cc:3238] "
    "No match found for server name: bank-a"
)


def test_a_glog_line_keeps_its_level_source_and_text() -> None:
    line = json.loads(as_json_line(GLOG_LINE))
    assert line["logger"] == "grpc" and line["level"] == "error"
    assert line["source"] == "ssl_transport_security.cc:3238"
    assert line["msg"] == "No match found for server name: bank-a"
    assert "time" in line


def test_a_json_line_passes_unchanged_and_other_text_is_wrapped() -> None:
    already = '{"level":"info","msg":"rpc"}'
    assert as_json_line(already) == already
    wrapped = json.loads(as_json_line('{not json "at all'))
    assert (wrapped["level"], wrapped["msg"]) == ("warning", '{not json "at all')


def test_a_process_that_routes_its_stderr_writes_only_json_lines() -> None:
    program = "\n".join([
        "import logging, os, sys, time",
        "from paygate.common.logs import setup_logging",
        "setup_logging('test')",
        f"os.write(2, {GLOG_LINE!r}.encode() + b'\\n')  # as the C core writes",
        "logging.getLogger('paygate').info('after')",
        "time.sleep(0.5)  # the relay thread writes the native line meanwhile",
    ])
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(text) for text in result.stderr.splitlines()]
    assert [line["msg"] for line in lines if line["logger"] == "grpc"] == [
        "No match found for server name: bank-a"
    ]
    assert {line["msg"] for line in lines if line["logger"] == "paygate"} == {"starting", "after"}
