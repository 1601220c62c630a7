"""supervisord's XML-RPC interface, asked from the test process itself.

`supervisorctl` is a Python program: every call starts an interpreter and imports before it
asks supervisord anything (about 0.2 s, and a core while it does, on a machine of two). The
suite's waits ask for a program's pid many times while that program restarts and needs the
cores, so they ask supervisord here instead: the same socket and credentials supervisorctl
uses (the config file's [supervisorctl] serverurl, username and password), its relative
socket path resolved against the directory supervisord runs in. Every call has a deadline.

    rpc = SupervisorRpc.of(supervisor_conf, directory)   None: not a unix:// socket
    rpc.pid("gateway")            0 while it does not run, as `supervisorctl pid` prints
    rpc.pids()                    {program: pid} of every program that runs
    rpc.state()                   "RUNNING", "SHUTDOWN", ... (a question wakes it, too)
    rpc.shutdown()                as `supervisorctl shutdown`: stop everything, then exit
"""

from __future__ import annotations

import base64
import configparser
import http.client
import pathlib
import socket
import xmlrpc.client
from typing import Any

RPC_TIMEOUT_S = 10.0
UNIX = "unix://"


class SupervisorRpcError(RuntimeError):
    """supervisord refused a call (a fault) or did not answer it."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, with a timeout on connecting and on every read."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, authorization: str, timeout_s: float) -> None:
        super().__init__()
        self._path = path
        self._authorization = authorization
        self._timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        self._extra_headers = (
            [("Authorization", self._authorization)] if self._authorization else []
        )
        self._connection = (host, _UnixConnection(self._path, self._timeout_s))
        return self._connection[1]


class SupervisorRpc:
    def __init__(
        self,
        socket_path: pathlib.Path,
        username: str,
        password: str,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> None:
        self._path = str(socket_path)
        # HTTP basic authentication, as supervisorctl sends it (no name: none).
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._authorization = f"Basic {credentials}" if username else ""
        self._timeout_s = timeout_s

    @classmethod
    def of(cls, supervisor_conf: pathlib.Path, directory: pathlib.Path) -> SupervisorRpc | None:
        """The interface of the supervisord that runs `supervisor_conf` in `directory`; None
        when its [supervisorctl] names no unix socket (then ask supervisorctl)."""
        parser = configparser.RawConfigParser()
        parser.read(supervisor_conf)
        if not parser.has_section("supervisorctl"):
            return None
        section = parser["supervisorctl"]
        url = section.get("serverurl", "").replace("%(here)s", str(supervisor_conf.parent))
        if not url.startswith(UNIX):
            return None
        path = directory / url.removeprefix(UNIX)  # an absolute path stays as it is
        return cls(path, section.get("username", ""), section.get("password", ""))

    def _call(self, method: str, *args: Any) -> Any:
        transport = _UnixTransport(self._path, self._authorization, self._timeout_s)
        proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)
        try:
            with proxy:
                return getattr(proxy, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorRpcError(f"supervisord {method}{args}: {exc.faultString}") from exc
        except xmlrpc.client.ProtocolError as exc:
            raise SupervisorRpcError(f"supervisord {method}{args}: HTTP {exc.errcode}") from exc
        except (xmlrpc.client.Error, OSError) as exc:
            raise SupervisorRpcError(f"supervisord {method}{args}: {exc}") from exc

    def pid(self, program: str) -> int:
        info = self._call("supervisor.getProcessInfo", program)
        return int(info["pid"])

    def pids(self) -> dict[str, int]:
        infos = self._call("supervisor.getAllProcessInfo")
        return {str(i["name"]): int(i["pid"]) for i in infos if int(i["pid"]) > 0}

    def state(self) -> str:
        """supervisord's state: RUNNING, SHUTDOWN, ..."""
        return str(self._call("supervisor.getState")["statename"])

    def shutdown(self) -> None:
        self._call("supervisor.shutdown")


__all__ = ["SupervisorRpc", "SupervisorRpcError"]
