"""A Paygate suite under supervisord, for tests: start a fresh one, or attach to a running one.

`Suite.start(folder)` makes certificates, a config file on free ports and starts supervisord
with the repository's supervisord.conf in `folder`; `Suite.attach(...)` describes a suite
someone already runs. Either way a test sees the same small API (`config`, the targets,
channels, health and the operator's calls are `SuiteClient`, which the in-process servers of
tests/inproc share):

    suite.config                      the SuiteConfig the processes run with
    suite.dir                         the directory supervisord runs in (var/ is inside)
    suite.gateway_target              "127.0.0.1:PORT"; suite.bank_target("bank-a") likewise
    suite.gateway_channel_sync()      a grpc.Channel over TLS (use it in a `with` block)
    suite.bank_channel_sync(bank_id, identity="admin")   a grpc.Channel over mutual TLS
    suite.gateway_admin_channel_sync(identity="admin")   to the gateway's admin port, likewise
    suite.gateway_channel(), suite.bank_channel(...)     the same as grpc.aio channels
                                      (create them inside a running event loop)
    suite.admin_open_account(bank_id, balance_minor) -> account number
    suite.admin_deposit(bank_id, account, amount_minor, reference) -> DepositResponse
    suite.bank_account(bank_id, account) -> bank_pb2.Account
    suite.total_money([(bank_id, account), ...]) -> sum of their balances
    suite.supervisorctl(*args), suite.pid(program), suite.kill(program, signal)
    suite.wait_serving(program), suite.wait_restarted(program, old_pid)
    suite.arm_fault(process, point), suite.log_path(program)
    suite.env(), suite.cli("paygate", *args)   run the CLIs against this suite

Programs are the supervisord program names: "gateway", "bank-a", "bank-b", "bank-c".
A suite with several gateways (ops/supervisord-postgres.conf, tests/test_multi_gateway.py)
is started with its own `supervisor_conf` and `gateway_targets`, which name each gateway
program and its address ("gateway-1", "gateway-2"); target(), health(), wait_serving() and
gateway_channel_sync(program) then know them too.
Every wait here is bounded and every RPC carries a deadline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import signal as signals
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paygate.common import faults
from paygate.common.config import CONFIG_ENV, SuiteConfig, read_config_file
from paygate.common.tls import channel_credentials, expect_server_identity
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc
from supervisor_rpc import SupervisorRpc, SupervisorRpcError

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
SUPERVISOR_CONF = REPO / "supervisord.conf"
DEMO_ACCOUNTS = REPO / "ops" / "demo-accounts"

GATEWAY = "gateway"
BANKS = ("bank-a", "bank-b", "bank-c")
PROGRAMS = (*BANKS, GATEWAY)

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_WAIT_TIMEOUT_S = 30.0
DEFAULT_RPC_TIMEOUT_S = 5.0
DEFAULT_CLI_TIMEOUT_S = 60.0
SUPERVISORCTL_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 40.0  # supervisord stops each program within stopwaitsecs=15
POLL_INTERVAL_S = 0.1
EXIT_POLL_INTERVAL_S = 0.05  # a look at /proc, nothing more
LOG_TAIL_LINES = 30


class SuiteError(RuntimeError):
    """The suite did not start, stop or answer the way a test needs."""


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free on 127.0.0.1 now (all held open together, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# Every link code the banks gave the tests: secrets, which no log may hold.
ISSUED_LINK_CODES: list[str] = []


class OpenedAccount(str):
    """An account number (a str, as the tests pass it around) with its link code."""

    link_code: str

    def __new__(cls, number: str, link_code: str) -> OpenedAccount:
        opened = super().__new__(cls, number)
        opened.link_code = link_code
        return opened


def link_code_of(account: str) -> str:
    """The link code of an account the tests opened; for any other number, a code that
    is not its code (the bank then answers exactly as for an unknown account)."""
    return account.link_code if isinstance(account, OpenedAccount) else "NOT-THE-CODE"


def load_gen_certs() -> ModuleType:
    """ops/gen_certs.py is a script, not a package module: import it by path."""
    path = REPO / "ops" / "gen_certs.py"
    spec = importlib.util.spec_from_file_location("paygate_ops_gen_certs", path)
    if spec is None or spec.loader is None:
        raise SuiteError("cannot import ops/gen_certs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The shared suite's tests fail many logins from 127.0.0.1 on purpose; only the throttle
# tests, on a suite of their own, use the default per-address limit.
SHARED_GATEWAY_SETTINGS: Mapping[str, object] = {"login_max_failures_per_address": 1_000_000}

# A gateway a test kills leaves its unfinished payments to recovery, which takes one over
# once its lease has expired, at its next pass: with the defaults (3 x prepare_timeout_s, a
# pass every 2 s) up to 8 s after the kill, and the tests wait for it at every kill. A
# suite's gateways take 4 s at most: a lease still longer than the prepare phase (2.2 s),
# as two_phase.py asks of it (the gateways share one clock here), and a pass every second.
# A test's gateway_settings may set either.
SUITE_GATEWAY_TIMING: Mapping[str, object] = {"lease_s": 3.0, "recovery_interval_s": 1.0}


def write_config(
    folder: pathlib.Path,
    gateway_settings: Mapping[str, object] = SHARED_GATEWAY_SETTINGS,
    database_urls: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """Write folder/paygate.toml: every process on a free port, files under folder.

    `gateway_settings` adds keys to the [gateway] table (see paygate.common.config);
    `database_urls` maps "gateway" or a bank id to its `database` (a postgresql:// URL).
    """
    urls = database_urls or {}
    ports = iter(free_ports(3 + 2 * len(BANKS)))
    lines = [
        'var_dir = "var"',
        'certs_dir = "certs"',
        "fault_injection = true",
        "",
        "[gateway]",
        f'listen = "127.0.0.1:{next(ports)}"',
        f'metrics = "127.0.0.1:{next(ports)}"',
        f'admin_listen = "127.0.0.1:{next(ports)}"',
        "bcrypt_rounds = 4",
        "prepare_timeout_s = 2.0",
        # JSON writes true/false, numbers and double-quoted strings as TOML does.
        *(
            f"{key} = {json.dumps(value)}"
            for key, value in {**SUITE_GATEWAY_TIMING, **gateway_settings}.items()
        ),
        *([f"database = {json.dumps(urls[GATEWAY])}"] if GATEWAY in urls else []),
    ]
    for bank_id in BANKS:
        lines += [
            "",
            f"[banks.{bank_id}]",
            f'listen = "127.0.0.1:{next(ports)}"',
            f'metrics = "127.0.0.1:{next(ports)}"',
            f"demo_accounts = {json.dumps(str(DEMO_ACCOUNTS / f'{bank_id}.toml'))}",
            *([f"database = {json.dumps(urls[bank_id])}"] if bank_id in urls else []),
        ]
    path = folder / "paygate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_config(path: pathlib.Path | None, cwd: pathlib.Path) -> SuiteConfig:
    """Load a config as the suite's processes see it: relative paths against their cwd."""
    return read_config_file(path, base=cwd)


def client_target(listen: str) -> str:
    """The address a client on this machine dials for a server's listen address."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as gone (PID 1 in a container may not reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _parent_pid(pid: int) -> int | None:
    """The parent of a running process; None once it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


class SuiteClient:
    """What a test does with a suite as its client: channels with the right certificates,
    health checks, and the bank operator's calls. `Suite` (processes under supervisord) and
    the in-process servers of tests/inproc share it, so a test runs against either."""

    def __init__(
        self, config: SuiteConfig, gateway_targets: Mapping[str, str | None] | None = None
    ) -> None:
        self.config = config
        self.gateway_target = client_target(self.config.gateway.listen)
        # Every gateway program and the address it serves on (None: the [gateway] table's).
        self.gateway_targets = {GATEWAY: self.gateway_target}
        for program, target in (gateway_targets or {}).items():
            self.gateway_targets[program] = target or self.gateway_target

    # Health ---------------------------------------------------------------------------

    def target(self, program: str) -> str:
        if program in self.gateway_targets:
            return self.gateway_targets[program]
        return self.bank_target(program)

    def health(
        self, program: str, service: str = "", timeout_s: float = DEFAULT_RPC_TIMEOUT_S
    ) -> int:
        """One grpc.health.v1 Check of `program`; returns the HealthCheckResponse status."""
        if program in self.gateway_targets:
            channel = self.gateway_channel_sync(program)
        else:
            channel = self.bank_channel_sync(program)
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            response = stub.Check(request, timeout=timeout_s)
        return int(response.status)

    # Channels -------------------------------------------------------------------------

    def bank_target(self, bank_id: str) -> str:
        return client_target(self.config.banks[bank_id].listen)

    def _gateway_credentials(self) -> grpc.ChannelCredentials:
        return channel_credentials(self.config.certs_dir / "ca.pem")

    def _mtls_credentials(self, identity: str | None) -> grpc.ChannelCredentials:
        client = None if identity is None else self.config.tls_for(identity)
        return channel_credentials(self.config.certs_dir / "ca.pem", client=client)

    def gateway_channel_sync(self, program: str = GATEWAY) -> grpc.Channel:
        """A synchronous channel to the gateway (or gateway `program`) over TLS."""
        return grpc.secure_channel(self.gateway_targets[program], self._gateway_credentials())

    def bank_channel_sync(self, bank_id: str, identity: str | None = "admin") -> grpc.Channel:
        """A synchronous channel to a bank over mutual TLS as `identity` (None: no certificate)."""
        return grpc.secure_channel(self.bank_target(bank_id), self._mtls_credentials(identity))

    def admin_target(self) -> str:
        """The gateway's admin port (AdminService), as a client on this machine dials it."""
        return client_target(self.config.gateway.admin_listen)

    def gateway_admin_channel_sync(self, identity: str | None = "admin") -> grpc.Channel:
        """A synchronous channel to the gateway's admin port over mutual TLS as `identity`
        (None: no certificate), checking that the server is the gateway."""
        return grpc.secure_channel(
            self.admin_target(),
            self._mtls_credentials(identity),
            options=[expect_server_identity(GATEWAY)],
        )

    def gateway_channel(self) -> grpc.aio.Channel:
        """A grpc.aio channel to the gateway over TLS; create it inside a running event loop."""
        return grpc.aio.secure_channel(self.gateway_target, self._gateway_credentials())

    def bank_channel(self, bank_id: str, identity: str | None = "admin") -> grpc.aio.Channel:
        """A grpc.aio channel to a bank over mutual TLS; create it inside a running event loop."""
        return grpc.aio.secure_channel(self.bank_target(bank_id), self._mtls_credentials(identity))

    # Bank operations as the operator ---------------------------------------------------

    def admin_open_account(
        self, bank_id: str, balance_minor: int, currency: str = "USD"
    ) -> OpenedAccount:
        """Open an account at `bank_id` with the admin certificate; returns its number,
        which carries the account's link code for registering with it."""
        with self.bank_channel_sync(bank_id) as channel:
            response = bank_pb2_grpc.BankServiceStub(channel).OpenAccount(
                bank_pb2.OpenAccountRequest(currency=currency, initial_balance=balance_minor),
                timeout=DEFAULT_RPC_TIMEOUT_S,
            )
        ISSUED_LINK_CODES.append(response.link_code)
        return OpenedAccount(response.account.account_number, response.link_code)

    def admin_deposit(
        self, bank_id: str, account_number: str, amount_minor: int, reference: str,
        currency: str = "USD",
    ) -> bank_pb2.DepositResponse:
        with self.bank_channel_sync(bank_id) as channel:
            response: bank_pb2.DepositResponse = bank_pb2_grpc.BankServiceStub(channel).Deposit(
                bank_pb2.DepositRequest(
                    account_number=account_number, amount=amount_minor, currency=currency,
                    reference=reference,
                ),
                timeout=DEFAULT_RPC_TIMEOUT_S,
            )
        return response

    def bank_account(self, bank_id: str, account_number: str) -> bank_pb2.Account:
        with self.bank_channel_sync(bank_id) as channel:
            response = bank_pb2_grpc.BankServiceStub(channel).GetAccount(
                bank_pb2.GetAccountRequest(account_number=account_number),
                timeout=DEFAULT_RPC_TIMEOUT_S,
            )
        account: bank_pb2.Account = response.account
        return account

    def bank_holds(self, bank_id: str, account_number: str) -> list[bank_pb2.Hold]:
        """Every hold open on an account (ListHolds, page after page), oldest first."""
        holds: list[bank_pb2.Hold] = []
        token = ""
        with self.bank_channel_sync(bank_id) as channel:
            stub = bank_pb2_grpc.BankServiceStub(channel)
            while True:
                response = stub.ListHolds(
                    bank_pb2.ListHoldsRequest(account_number=account_number, page_token=token),
                    timeout=DEFAULT_RPC_TIMEOUT_S,
                )
                holds += response.holds
                token = response.next_page_token
                if not token:
                    return holds

    def total_money(self, accounts: Iterable[tuple[str, str]]) -> int:
        """The sum of the posted balances of the given (bank_id, account_number) pairs."""
        return sum(self.bank_account(bank_id, number).balance for bank_id, number in accounts)


class Suite(SuiteClient):
    def __init__(
        self,
        *,
        directory: pathlib.Path,
        config_path: pathlib.Path | None,
        supervisor_conf: pathlib.Path,
        scratch: pathlib.Path,
        owned: bool,
        gateway_targets: Mapping[str, str | None] | None = None,
    ) -> None:
        self.dir = directory
        self.config_path = config_path
        self.supervisor_conf = supervisor_conf
        self.scratch = scratch
        self.owned = owned  # True when this Suite started supervisord and must stop it
        # supervisord asked from this process; None: its socket is not a unix one.
        self._rpc = SupervisorRpc.of(supervisor_conf, directory)
        super().__init__(read_config(config_path, directory), gateway_targets)

    # Starting, attaching, stopping ----------------------------------------------------

    @classmethod
    def start(
        cls,
        folder: pathlib.Path,
        *,
        programs: Sequence[str] = PROGRAMS,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
        gateway_settings: Mapping[str, object] = SHARED_GATEWAY_SETTINGS,
        extra_env: Mapping[str, str] | None = None,
        database_urls: Mapping[str, str] | None = None,
        supervisor_conf: pathlib.Path = SUPERVISOR_CONF,
        gateway_targets: Mapping[str, str | None] | None = None,
    ) -> Suite:
        """Start a fresh suite in `folder` and wait until `programs` report SERVING.

        `extra_env` is added to the environment supervisord and its programs start with
        (OTEL_* variables, for instance); `database_urls` puts processes on PostgreSQL;
        `supervisor_conf` and `gateway_targets` run other programs (several gateways)."""
        load_gen_certs().generate(folder / "certs")
        config_path = write_config(folder, gateway_settings, database_urls)
        (folder / "var" / "log").mkdir(parents=True, exist_ok=True)
        (folder / "scratch").mkdir(exist_ok=True)
        suite = cls(
            directory=folder,
            config_path=config_path,
            supervisor_conf=supervisor_conf,
            scratch=folder / "scratch",
            owned=True,
            gateway_targets=gateway_targets,
        )
        # supervisord forks, and this first process exits once the daemon runs.
        started = subprocess.run(
            [str(BIN / "supervisord"), "-c", str(supervisor_conf)],
            cwd=folder,
            env={**suite.env(), **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=SUPERVISORCTL_TIMEOUT_S,
            check=False,
        )
        if started.returncode != 0:
            raise SuiteError(
                f"supervisord exited with {started.returncode}: "
                f"{started.stderr or started.stdout}\n"
                f"tail of {suite.supervisord_log}:\n{tail(suite.supervisord_log)}"
            )
        try:
            suite._wake_supervisord()
            suite.wait_all_serving(programs, timeout_s=timeout_s)
        except BaseException:
            suite.stop()
            raise
        return suite

    @classmethod
    def attach(
        cls,
        config_path: pathlib.Path | None,
        *,
        supervisor_conf: pathlib.Path,
        directory: pathlib.Path,
        scratch: pathlib.Path,
        programs: Sequence[str] = PROGRAMS,
        timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    ) -> Suite:
        """Describe a suite someone already runs (config None: the defaults), once it serves."""
        suite = cls(
            directory=directory,
            config_path=config_path,
            supervisor_conf=supervisor_conf,
            scratch=scratch,
            owned=False,
        )
        suite.wait_all_serving(programs, timeout_s=timeout_s)
        return suite

    @property
    def supervisord_pidfile(self) -> pathlib.Path:
        return self.dir / "var" / "supervisord.pid"

    @property
    def supervisord_log(self) -> pathlib.Path:
        return self.dir / "var" / "log" / "supervisord.log"

    def stop(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Shut down the supervisord this Suite started and wait for its process to exit.

        supervisord stops its programs one priority group after another, each group taking
        a second or more of its event loop (about 5 s for four programs). A suite at the end
        of its tests needs no order: once supervisord is shutting down (it then restarts no
        program that exits), every program is sent SIGTERM at once, as supervisord would
        send it, and they drain and exit together."""
        if not self.owned:
            return
        pid = self._supervisord_pid()
        shut_down, output, programs = self._shut_down(pid)
        if pid is None:
            if not shut_down:
                raise SuiteError(f"supervisord did not shut down and left no pidfile: {output}")
            return
        if not shut_down and _pid_alive(pid):
            # The control socket is gone but the daemon we started is not: ask it directly.
            os.kill(pid, signals.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise SuiteError(f"supervisord (pid {pid}) still runs {timeout_s} s after shutdown")
            if programs and not any(_pid_alive(p) for p in programs):
                programs = []
                self._wake_supervisord()  # it may not have seen the last one exit yet
            time.sleep(EXIT_POLL_INTERVAL_S)

    def _shut_down(self, supervisord_pid: int | None) -> tuple[bool, str, list[int]]:
        """Ask supervisord to shut down, and its programs to stop at once; (whether it took
        the request, what it said, the programs sent SIGTERM)."""
        if self._rpc is None or supervisord_pid is None:
            result = self.supervisorctl("shutdown")
            return result.returncode == 0, result.stdout + result.stderr, []
        try:
            running = self._rpc.pids()  # it answers no question once it is shutting down
            self._rpc.shutdown()
        except SupervisorRpcError as exc:
            return False, str(exc), []
        # Still its children, not pids reused since (a program that restarted meanwhile).
        programs = [p for p in running.values() if _parent_pid(p) == supervisord_pid]
        for program_pid in programs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(program_pid, signals.SIGTERM)
        return True, "", programs

    def _wake_supervisord(self) -> None:
        """supervisord acts between its waits for events, each a second long when none
        comes (it sees a program exit at the end of one): a question to it is an event."""
        if self._rpc is not None:
            with contextlib.suppress(SupervisorRpcError):
                self._rpc.state()

    def _supervisord_pid(self) -> int | None:
        try:
            return int(self.supervisord_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    # supervisord --------------------------------------------------------------------------

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `supervisorctl -c CONF ARGS` in the suite's directory; never raises on failure."""
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.supervisor_conf), *args],
            cwd=self.dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=SUPERVISORCTL_TIMEOUT_S,
            check=False,
        )

    def pid(self, program: str) -> int:
        """The pid supervisord reports for `program`; 0 while it is not running."""
        if self._rpc is not None:
            try:
                return self._rpc.pid(program)
            except SupervisorRpcError as exc:
                raise SuiteError(f"pid of {program}: {exc}") from exc
        result = self.supervisorctl("pid", program)
        text = result.stdout.strip()
        if not text.isdigit():
            raise SuiteError(f"supervisorctl pid {program}: {text or result.stderr}")
        return int(text)

    def kill(self, program: str, sig: int = signals.SIGKILL) -> int:
        """Send `sig` to the running `program`; returns the pid it was sent to."""
        pid = self.pid(program)
        if pid <= 0:
            raise SuiteError(f"{program} is not running")
        os.kill(pid, sig)
        return pid

    def wait_restarted(
        self, program: str, old_pid: int, timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    ) -> int:
        """Wait until supervisord runs `program` under a pid other than `old_pid`, serving."""
        deadline = time.monotonic() + timeout_s
        while True:
            pid = self.pid(program)
            if pid not in (0, old_pid):
                break
            if time.monotonic() > deadline:
                raise SuiteError(
                    f"{program} was not restarted within {timeout_s} s (pid still {pid})\n"
                    f"{self.supervisorctl('status').stdout}\n"
                    f"tail of {self.log_path(program)}:\n{tail(self.log_path(program))}"
                )
            time.sleep(POLL_INTERVAL_S)
        self.wait_serving(program, timeout_s=max(1.0, deadline - time.monotonic()))
        return pid

    def log_path(self, program: str) -> pathlib.Path:
        """The file supervisord writes the program's output to (var/log/NAME.log)."""
        return self.dir / "var" / "log" / f"{program}.log"

    def arm_fault(self, process: str, point: str) -> pathlib.Path:
        """Make `process` kill itself once at crash point `point` (needs fault_injection)."""
        return faults.arm(self.config.var_dir, process, point)

    # Waiting ---------------------------------------------------------------------------

    def wait_serving(self, program: str, timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> None:
        """Wait until `program` reports SERVING; on timeout say why, with the tail of its log."""
        self.wait_all_serving([program], timeout_s=timeout_s)

    def wait_all_serving(self, programs: Iterable[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for program in programs:
            last = "no answer yet"
            while True:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise SuiteError(self._not_serving_message(program, timeout_s, last))
                try:
                    status = self.health(program, timeout_s=min(2.0, remaining_s))
                except grpc.RpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
                else:
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                    last = f"health status {name}"
                time.sleep(POLL_INTERVAL_S)

    def _not_serving_message(self, program: str, timeout_s: float, last: str) -> str:
        status = self.supervisorctl("status")
        return (
            f"{program} did not report SERVING at {self.target(program)} within {timeout_s} s "
            f"(last: {last})\n"
            f"supervisorctl status:\n{status.stdout}{status.stderr}\n"
            f"tail of {self.log_path(program)}:\n{tail(self.log_path(program))}"
        )

    # The command-line tools -----------------------------------------------------------

    def env(self, xdg_config_home: pathlib.Path | None = None) -> dict[str, str]:
        """The environment for the suite's processes and CLIs, with its own XDG_CONFIG_HOME."""
        env = dict(os.environ)
        env.pop(CONFIG_ENV, None)
        if self.config_path is not None:
            env[CONFIG_ENV] = str(self.config_path)
        env["PAYGATE_GATEWAY"] = self.gateway_target
        env["PAYGATE_CA_CERT"] = str(self.config.certs_dir / "ca.pem")
        home = xdg_config_home or self.scratch / "xdg-config"
        home.mkdir(parents=True, exist_ok=True)
        env["XDG_CONFIG_HOME"] = str(home)
        return env

    def cli(
        self, program: str, *args: str, input: str | None = None,
        env: Mapping[str, str] | None = None, timeout_s: float = DEFAULT_CLI_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run a console script of the venv (`paygate`, `paygate-admin`) in the suite's dir."""
        return subprocess.run(
            [str(BIN / program), *args],
            cwd=self.dir,
            env=dict(env) if env is not None else self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


@contextlib.contextmanager
def started_suite(folder: pathlib.Path, **kwargs: Any) -> Any:
    """Start a suite in `folder` for the duration of a `with` block."""
    suite = Suite.start(folder, **kwargs)
    try:
        yield suite
    finally:
        suite.stop()


__all__ = [
    "BANKS", "GATEWAY", "PROGRAMS", "REPO", "Suite", "SuiteClient", "SuiteError", "started_suite",
]

