"""Seed a stopped suite's SQLite files with accounts, users and finished payments.

    python -m paygate.bench.seed --config DIR/paygate.toml --supervisor-dir DIR \
        --accounts 100000 --payments 1000000          (or: paygate-bench seed ...)

For the scale comparison (paygate-bench on an empty database, then on one with a million
stored payments and 100,000 accounts: the scale target). Run it while the suite's programs
are stopped (`supervisorctl stop all`) or before they first start: it refuses a database
file that any process has open. It writes what the real code would have written, in bulk:

- at each bank (the config's banks, accounts spread over them in turn): the accounts, each
  with its opening journal entry, as ledger.open_account writes them (without a link code:
  each is linked to its gateway user already); numbers continue after the highest existing
  account and the bank's demo accounts;
- at the gateway: one user per account (`PREFIX0`, `PREFIX1`, ...). bcrypt is run once and
  that one hash is stored for every user (thousands of hashes would take hours at the
  config's rounds); the password is $PAYGATE_SEED_PASSWORD, or a random one never shown;
- then M payments between random users, each in its final state: at the gateway the
  payments row (succeeded, committed, with its expired lease), its two payment_parties
  rows and its idempotency key (completed, created within the key TTL so that none is
  pruned: the worst case for size); at the banks the committed transaction(s) with their
  holds and the debit and credit journal entries, and the balances moved accordingly (a
  payer's balance never goes below zero).

Each chunk is one transaction per file (executemany), banks first. At the end every bank's
ledger is audited with the banks' own audit (ledger.audit) and the total money is checked
to be the old total plus the opening balances. An interrupted run leaves the files
consistent per bank but not between the gateway and the banks: start from a fresh suite.
SQLite files only (a PostgreSQL database is refused). No statistics are gathered (ANALYZE):
a real database has none either, and they would change the query plans measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import pathlib
import random
import secrets
import sqlite3
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import bcrypt

from paygate.bank import ledger
from paygate.bank.schema import SQLITE_MIGRATIONS as BANK_MIGRATIONS
from paygate.bank.store import SqliteLedgerTx
from paygate.common.config import CONFIG_ENV, ConfigError, SuiteConfig, read_config_file
from paygate.common.invariants import InvariantViolation
from paygate.common.money import MAX_AMOUNT_MINOR
from paygate.common.sqlite import Database
from paygate.gateway.accounts import USERNAME_PATTERN
from paygate.gateway.models import PaymentRequest
from paygate.gateway.payments import request_hash
from paygate.gateway.schema import SQLITE_MIGRATIONS as GATEWAY_MIGRATIONS

DEFAULT_ACCOUNTS = 100_000
DEFAULT_PAYMENTS = 1_000_000
DEFAULT_BALANCE_MINOR = 1_000_000  # 10,000.00 USD: about ten payments out of each
DEFAULT_MAX_AMOUNT_MINOR = 10_000
DEFAULT_SPAN_S = 6 * 3600.0
DEFAULT_CHUNK = 20_000
MAX_ACCOUNTS = 10_000_000
MAX_PAYMENTS = 100_000_000
MAX_CHUNK = 200_000
PASSWORD_ENV = "PAYGATE_SEED_PASSWORD"
CURRENCY = "USD"
DESCRIPTION = "seeded"
LEASE_OWNER = "seed"
DECIDED_AFTER_S = 0.004  # a seeded payment's decision and finish, after its creation
FINISHED_AFTER_S = 0.008
BUSY_TIMEOUT_MS = 5000
PAYER_ATTEMPTS = 100  # random payers tried before one with funds is found


class SeedError(Exception):
    """The seeding cannot be done; reported as `error: ...`, exit status 2."""


@dataclasses.dataclass(frozen=True)
class SeedAccount:
    bank_id: str
    account_number: str
    user_id: str
    username: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    accounts: int
    payments: int
    balance_minor: int
    max_amount_minor: int
    span_s: float
    chunk: int
    prefix: str
    seed: int
    lease_s: float  # a seeded payment's (expired) lease, as the gateway took it


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = read_config_file(args.config, base=args.supervisor_dir.resolve())
        summary = seed(config, settings_of(args, config))
    except (SeedError, OSError, sqlite3.Error, InvariantViolation, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate-bench seed",
        description="Write accounts, users and finished payments into a stopped suite's files.",
    )
    add = parser.add_argument
    add("--accounts", type=int, default=DEFAULT_ACCOUNTS,
        help=f"accounts, and gateway users, to add (default {DEFAULT_ACCOUNTS})")
    add("--payments", type=int, default=DEFAULT_PAYMENTS,
        help=f"finished payments to add (default {DEFAULT_PAYMENTS})")
    add("--balance", type=int, default=DEFAULT_BALANCE_MINOR, metavar="MINOR",
        help=f"each account's opening balance (default {DEFAULT_BALANCE_MINOR})")
    add("--max-amount", type=int, default=DEFAULT_MAX_AMOUNT_MINOR, metavar="MINOR",
        help=f"payments are 1 to this many minor units (default {DEFAULT_MAX_AMOUNT_MINOR})")
    add("--span-hours", type=float, default=DEFAULT_SPAN_S / 3600, metavar="HOURS",
        help="the payments are spread over this many hours before now; less than the "
        f"gateway's idempotency key TTL (default {DEFAULT_SPAN_S / 3600:.0f})")
    add("--chunk", type=int, default=DEFAULT_CHUNK,
        help=f"rows per transaction (default {DEFAULT_CHUNK})")
    add("--prefix", default=None,
        help="usernames are PREFIX0, PREFIX1, ... (default: seed-XXXX-, XXXX random)")
    add("--seed", type=int, default=0, help="seed of the random choices (default 0)")
    add("--config", default=os.environ.get(CONFIG_ENV) or None, metavar="TOML",
        help=f"the suite's config file (default ${CONFIG_ENV}, else the built-in defaults)")
    add("--supervisor-dir", type=pathlib.Path, default=pathlib.Path.cwd(), metavar="DIR",
        help="the directory the suite's supervisord runs in (default: here); relative "
        "paths of the config resolve against it")
    return parser


def settings_of(args: argparse.Namespace, config: SuiteConfig) -> Settings:
    prefix = args.prefix if args.prefix is not None else f"seed-{secrets.token_hex(2)}-"
    span_s = args.span_hours * 3600
    limits = [
        (2 <= args.accounts <= MAX_ACCOUNTS, f"--accounts: 2 to {MAX_ACCOUNTS}"),
        (0 <= args.payments <= MAX_PAYMENTS, f"--payments: 0 to {MAX_PAYMENTS}"),
        (1 <= args.max_amount <= args.balance <= MAX_AMOUNT_MINOR,
         f"--max-amount and --balance: 1 <= max-amount <= balance <= {MAX_AMOUNT_MINOR}"),
        (0 < span_s < config.gateway.idempotency_ttl_s,
         f"--span-hours: above 0, below the key TTL ({config.gateway.idempotency_ttl_s} s)"),
        (100 <= args.chunk <= MAX_CHUNK, f"--chunk: 100 to {MAX_CHUNK}"),
        (USERNAME_PATTERN.fullmatch(f"{prefix}0") is not None
         and USERNAME_PATTERN.fullmatch(f"{prefix}{args.accounts - 1}") is not None,
         "--prefix: usernames PREFIX<n> must be valid usernames (3 to 32 of a-z 0-9 _ . -)"),
    ]
    for ok, message in limits:
        if not ok:
            raise SeedError(message)
    return Settings(
        accounts=args.accounts, payments=args.payments, balance_minor=args.balance,
        max_amount_minor=args.max_amount, span_s=span_s, chunk=args.chunk, prefix=prefix,
        seed=args.seed, lease_s=config.gateway.effective_lease_s,
    )


def seed(config: SuiteConfig, settings: Settings) -> dict[str, Any]:
    """Seed the suite's files; the summary of what was written and how long it took."""
    files = database_files(config)
    in_use = open_by(files.values())
    if in_use:
        raise SeedError(f"the suite's databases are open ({'; '.join(in_use)}): stop its "
                        "programs first (supervisorctl stop all)")
    started = time.monotonic()
    for name, path in files.items():
        migrate(path, GATEWAY_MIGRATIONS if name == "gateway" else BANK_MIGRATIONS)
    conns = {name: connect(path) for name, path in files.items()}
    try:
        summary = seed_into(config, conns, settings)
        checkpoint(list(conns.values()))
    finally:
        for conn in conns.values():
            conn.close()
    summary["seconds"]["total"] = round(time.monotonic() - started, 1)
    summary["file_mib"] = {
        name: round(path.stat().st_size / 2**20, 1) for name, path in files.items()
    }
    return summary


def seed_into(
    config: SuiteConfig, conns: Mapping[str, sqlite3.Connection], settings: Settings
) -> dict[str, Any]:
    gateway = conns["gateway"]
    banks = {name: conn for name, conn in conns.items() if name != "gateway"}
    if gateway.execute(
        "SELECT 1 FROM users WHERE username = ?", (f"{settings.prefix}0",)
    ).fetchone():
        raise SeedError(f"users {settings.prefix}* exist already: choose another --prefix")
    total_before = sum(audited(conn) for conn in banks.values())
    started = time.monotonic()
    rng = random.Random(settings.seed)
    accounts = plan_accounts(config, banks, settings, rng)
    write_accounts(gateway, banks, accounts, settings, password_hash(config))
    accounts_s = time.monotonic() - started
    counts = write_payments(gateway, banks, accounts, settings, rng)
    payments_s = time.monotonic() - started - accounts_s
    total_after = sum(audited(conn) for conn in banks.values())
    if total_after != total_before + settings.accounts * settings.balance_minor:
        raise InvariantViolation(
            f"money not conserved: {total_before} + the opening balances != {total_after}"
        )
    return {
        "accounts": settings.accounts,
        "users": settings.accounts,
        "payments": settings.payments,
        "first_username": f"{settings.prefix}0",
        "last_username": f"{settings.prefix}{settings.accounts - 1}",
        "rows": counts,
        "audit": "passed",
        "money_minor": {"before": total_before, "after": total_after},
        "seconds": {"accounts": round(accounts_s, 1), "payments": round(payments_s, 1)},
        "payments_per_s": round(settings.payments / payments_s) if payments_s > 0 else None,
    }


def database_files(config: SuiteConfig) -> dict[str, pathlib.Path]:
    """The gateway's and every bank's SQLite file, by name ("gateway", "bank-a", ...)."""
    files: dict[str, pathlib.Path] = {}
    for name, location in [("gateway", config.gateway.database),
                           *((b, config.banks[b].database) for b in sorted(config.banks))]:
        if not isinstance(location, pathlib.Path):
            raise SeedError(f"{name}'s database is not a SQLite file ({location}); "
                            "seeding writes SQLite files only")
        files[name] = location
    return files


def open_by(paths: Iterable[pathlib.Path]) -> list[str]:
    """The processes (of this user: others' /proc/PID/fd cannot be read) holding a file open."""
    wanted = {str(pathlib.Path(p).resolve()) for p in paths}
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            targets = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        for target in sorted(targets & wanted):
            found.append(f"pid {entry.name} has {target}")
    return found


def migrate(path: pathlib.Path, migrations: Sequence[str]) -> None:
    """Create the file and its schema as the process would at start (a no-op when it has it)."""

    async def open_and_close() -> None:
        database = Database(path, migrations)
        await database.open()
        await database.close()

    asyncio.run(open_and_close())


def connect(path: pathlib.Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # A bulk load: durable at the checkpoint at the end, not at every chunk's COMMIT.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def password_hash(config: SuiteConfig) -> bytes:
    password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(18)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(config.gateway.bcrypt_rounds))


def first_free_number(conn: sqlite3.Connection, demo_file: pathlib.Path | None) -> int:
    """The account number after the bank's highest, counting the demo accounts it will open."""
    (highest,) = conn.execute(
        "SELECT MAX(CAST(account_number AS INTEGER)) FROM accounts"
    ).fetchone()
    numbers = [ledger.FIRST_ACCOUNT_NUMBER - 1, int(highest or 0)]
    if demo_file is not None and demo_file.exists():
        with demo_file.open("rb") as f:
            entries = tomllib.load(f).get("accounts", [])
        numbers += [int(str(e["account_number"])) for e in entries
                    if str(e["account_number"]).isdigit()]
    return max(numbers) + 1


def plan_accounts(
    config: SuiteConfig, banks: Mapping[str, sqlite3.Connection], settings: Settings,
    rng: random.Random,
) -> list[SeedAccount]:
    """The accounts to open, over the banks in turn, each with its user."""
    bank_ids = sorted(banks)
    numbers = {b: first_free_number(banks[b], config.banks[b].demo_accounts) for b in bank_ids}
    accounts = []
    for index in range(settings.accounts):
        bank_id = bank_ids[index % len(bank_ids)]
        accounts.append(SeedAccount(
            bank_id, str(numbers[bank_id]), f"usr_{rng.getrandbits(128):032x}",
            f"{settings.prefix}{index}",
        ))
        numbers[bank_id] += 1
    return accounts


def in_transaction(conn: sqlite3.Connection, statements: Sequence[tuple[str, list[Any]]]) -> None:
    """Run each statement over its rows (executemany), all in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            if rows:
                conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


INSERT_ACCOUNT = ("INSERT INTO accounts (account_number, currency, balance, pending_debit,"
                  " pending_credit, created_at) VALUES (?, ?, ?, 0, 0, ?)")
INSERT_ENTRY = ("INSERT INTO entries (account_number, amount, kind, reference, created_at)"
                " VALUES (?, ?, ?, ?, ?)")
INSERT_USER = ("INSERT INTO users (user_id, username, bank_id, account_number, currency,"
               " password_hash, created_at_s) VALUES (?, ?, ?, ?, ?, ?, ?)")


def write_accounts(
    gateway: sqlite3.Connection, banks: Mapping[str, sqlite3.Connection],
    accounts: Sequence[SeedAccount], settings: Settings, hashed: bytes,
) -> None:
    now_s = time.time() - settings.span_s - 60  # opened before the first payment
    opened_at = iso(now_s)
    for start in range(0, len(accounts), settings.chunk):
        chunk = accounts[start:start + settings.chunk]
        for bank_id, conn in banks.items():
            mine = [a for a in chunk if a.bank_id == bank_id]
            in_transaction(conn, [
                (INSERT_ACCOUNT, [(a.account_number, CURRENCY, settings.balance_minor, opened_at)
                                  for a in mine]),
                (INSERT_ENTRY, [(a.account_number, settings.balance_minor, "open",
                                 f"open:{a.account_number}", opened_at) for a in mine]),
            ])
        in_transaction(gateway, [(INSERT_USER, [
            (a.user_id, a.username, a.bank_id, a.account_number, CURRENCY, hashed, now_s)
            for a in chunk
        ])])


def iso(at_s: float) -> str:
    """A time as the bank's store writes one (store._now)."""
    return datetime.datetime.fromtimestamp(at_s, datetime.UTC).isoformat()


@dataclasses.dataclass(frozen=True)
class SeedPayment:
    payer: SeedAccount
    payee: SeedAccount
    amount_minor: int
    at_s: float
    payment_id: str
    key: str


def plan_payments(
    accounts: Sequence[SeedAccount], settings: Settings, rng: random.Random
) -> Iterator[list[SeedPayment]]:
    """Chunks of payments in time order over the span, payers never overdrawn."""
    balances = [settings.balance_minor] * len(accounts)
    first_s = time.time() - settings.span_s
    step_s = settings.span_s / max(1, settings.payments)
    chunk: list[SeedPayment] = []
    for index in range(settings.payments):
        amount = rng.randint(1, settings.max_amount_minor)
        for _ in range(PAYER_ATTEMPTS):
            payer = rng.randrange(len(accounts))
            if balances[payer] >= amount:
                break
        else:
            raise SeedError("the payers ran out of money: raise --balance or lower --max-amount")
        payee = (payer + rng.randrange(1, len(accounts))) % len(accounts)
        balances[payer] -= amount
        balances[payee] += amount
        chunk.append(SeedPayment(
            accounts[payer], accounts[payee], amount, first_s + index * step_s,
            f"pay_{rng.getrandbits(96):024x}", f"{rng.getrandbits(128):032x}",
        ))
        if len(chunk) == settings.chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


INSERT_PAYMENT = (
    "INSERT INTO payments (seq, payment_id, status, txn_state, payer_user_id, payer_username,"
    " payer_bank_id, payer_account, payee_user_id, payee_username, payee_bank_id, payee_account,"
    " amount, currency, description, failure_reason, create_time_us, decided_at_s,"
    " finished_at_s, lease_owner, lease_expires_at_s)"
    " VALUES (?, ?, 'succeeded', 'committed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?)"
)
INSERT_PARTY = "INSERT INTO payment_parties (user_id, seq) VALUES (?, ?)"
INSERT_KEY = (
    "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state, payment_id,"
    " created_at_s) VALUES (?, ?, ?, 'completed', ?, ?)"
)
INSERT_TRANSACTION = (
    "INSERT INTO transactions (transaction_id, state, legs_digest, reason, created_at,"
    " resolved_at) VALUES (?, 'committed', ?, '', ?, ?)"
)
INSERT_HOLD = ("INSERT INTO holds (transaction_id, account_number, direction, amount)"
               " VALUES (?, ?, ?, ?)")
MOVE_BALANCE = "UPDATE accounts SET balance = balance + ? WHERE account_number = ?"


def write_payments(
    gateway: sqlite3.Connection, banks: Mapping[str, sqlite3.Connection],
    accounts: Sequence[SeedAccount], settings: Settings, rng: random.Random,
) -> dict[str, dict[str, int]]:
    """Write the payments chunk by chunk; the rows written per file and table."""
    (seq,) = gateway.execute(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM payments), 0),"
        " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'payments'), 0))"
    ).fetchone()
    counts: dict[str, dict[str, int]] = {}
    for chunk in plan_payments(accounts, settings, rng):
        rows: dict[str, dict[str, list[Any]]] = {b: {} for b in banks}
        for payment in chunk:
            add_bank_rows(rows, payment)
        for bank_id, conn in banks.items():
            bank = rows[bank_id]
            moved: dict[str, int] = {}
            for number, delta in bank.pop("moves", []):
                moved[number] = moved.get(number, 0) + delta
            moves = [(delta, number) for number, delta in moved.items()]
            in_transaction(conn, [(INSERT_TRANSACTION, bank.get("transactions", [])),
                                  (INSERT_HOLD, bank.get("holds", [])),
                                  (INSERT_ENTRY, bank.get("entries", [])),
                                  (MOVE_BALANCE, moves)])
            tally(counts, bank_id, {**bank, "balance_updates": moves})
        payments, parties, keys = [], [], []
        for payment in chunk:
            seq += 1
            payer, payee, t = payment.payer, payment.payee, payment.at_s
            payments.append((
                seq, payment.payment_id, payer.user_id, payer.username, payer.bank_id,
                payer.account_number, payee.user_id, payee.username, payee.bank_id,
                payee.account_number, payment.amount_minor, CURRENCY, DESCRIPTION,
                int(t * 1_000_000), t + DECIDED_AFTER_S, t + FINISHED_AFTER_S, LEASE_OWNER,
                t + settings.lease_s,
            ))
            parties += [(payer.user_id, seq), (payee.user_id, seq)]
            keys.append((payer.user_id, payment.key, key_hash(payment), payment.payment_id, t))
        in_transaction(gateway, [(INSERT_PAYMENT, payments), (INSERT_PARTY, parties),
                                 (INSERT_KEY, keys)])
        tally(counts, "gateway", {"payments": payments, "payment_parties": parties,
                                  "idempotency_keys": keys})
    return counts


def key_hash(payment: SeedPayment) -> str:
    """The request hash the gateway stores with the key (payments.request_hash)."""
    return request_hash(PaymentRequest(
        idempotency_key=payment.key, payee_username=payment.payee.username,
        amount_minor=payment.amount_minor, currency=CURRENCY, description=DESCRIPTION,
    ))


def add_bank_rows(rows: dict[str, dict[str, list[Any]]], payment: SeedPayment) -> None:
    """One payment's rows at its bank(s): a committed transaction per bank, as Commit posts
    it (ledger.commit): its holds, a journal entry per hold and the balance moved."""
    legs = [(payment.payer, ledger.DEBIT, -payment.amount_minor),
            (payment.payee, ledger.CREDIT, payment.amount_minor)]
    created, resolved = iso(payment.at_s), iso(payment.at_s + FINISHED_AFTER_S)
    for bank_id in sorted({payment.payer.bank_id, payment.payee.bank_id}):
        mine = [leg for leg in legs if leg[0].bank_id == bank_id]
        digest = ledger.legs_digest([
            ledger.Leg(account_number=account.account_number, direction=direction,
                       amount_minor=abs(delta), currency=CURRENCY)
            for account, direction, delta in mine
        ])
        bank = rows[bank_id]
        bank.setdefault("transactions", []).append((payment.payment_id, digest, created, resolved))
        for account, direction, delta in mine:
            bank.setdefault("holds", []).append(
                (payment.payment_id, account.account_number, direction, abs(delta)))
            bank.setdefault("entries", []).append(
                (account.account_number, delta, direction, payment.payment_id, resolved))
            bank.setdefault("moves", []).append((account.account_number, delta))


def tally(counts: dict[str, dict[str, int]], name: str, tables: Mapping[str, list[Any]]) -> None:
    mine = counts.setdefault(name, {})
    for table, rows in tables.items():
        mine[table] = mine.get(table, 0) + len(rows)


def audited(conn: sqlite3.Connection) -> int:
    """The bank's total balance, after its own full audit (ledger.audit) passed."""
    conn.execute("BEGIN DEFERRED")
    try:
        totals, _ = ledger.audit(SqliteLedgerTx(conn))
    finally:
        conn.execute("ROLLBACK")
    return int(totals.balance)


def checkpoint(conns: Sequence[sqlite3.Connection]) -> None:
    """Move the WAL into the database files, durably, so the programs start from them."""
    for conn in conns:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


if __name__ == "__main__":
    sys.exit(main())
