"""The bank's schema: numbered migrations, in SQLite's and PostgreSQL's dialects.

The two lists are kept side by side so that a change to one is seen next to the other:
step N creates the same tables and columns in both (tests/test_store_contract.py checks
that they have the same steps and tables). Each database records the last step applied
(SQLite in `user_version`, PostgreSQL in `schema_migrations`) and runs the rest at start.
The columns the store reads are declared once, in statements.py.
"""

from __future__ import annotations

SQLITE_MIGRATIONS = [
    # 1: accounts, two-phase transactions with their holds, the journal of posted money.
    """
    CREATE TABLE accounts (
        account_number TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        balance INTEGER NOT NULL CHECK (balance >= 0),
        pending_debit INTEGER NOT NULL DEFAULT 0 CHECK (pending_debit >= 0),
        pending_credit INTEGER NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
        created_at TEXT NOT NULL,
        CHECK (balance - pending_debit >= 0)
    );
    CREATE TABLE transactions (
        transaction_id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('prepared', 'refused', 'committed', 'aborted')),
        legs_digest TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE INDEX transactions_prepared ON transactions (state) WHERE state = 'prepared';
    CREATE TABLE holds (
        transaction_id TEXT NOT NULL REFERENCES transactions (transaction_id),
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
        amount INTEGER NOT NULL CHECK (amount > 0),
        PRIMARY KEY (transaction_id, account_number, direction)
    );
    CREATE TABLE entries (
        entry_id INTEGER PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('open', 'deposit', 'debit', 'credit')),
        reference TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX entries_account ON entries (account_number);
    CREATE TABLE deposits (
        reference TEXT PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    # 2: the hash of each account's link code, the holder's proof at registration (NULL:
    # no code yet; the account cannot be linked until an operator issues one).
    """
    ALTER TABLE accounts ADD COLUMN link_code_hash TEXT
    """,
]


POSTGRES_MIGRATIONS = [
    # 1: accounts, two-phase transactions with their holds, the journal of posted money.
    """
    CREATE TABLE accounts (
        account_number TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        balance BIGINT NOT NULL CHECK (balance >= 0),
        pending_debit BIGINT NOT NULL DEFAULT 0 CHECK (pending_debit >= 0),
        pending_credit BIGINT NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CHECK (balance - pending_debit >= 0)
    );
    CREATE TABLE transactions (
        transaction_id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('prepared', 'refused', 'committed', 'aborted')),
        legs_digest TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        resolved_at TIMESTAMPTZ
    );
    CREATE INDEX transactions_prepared ON transactions (state) WHERE state = 'prepared';
    CREATE TABLE holds (
        transaction_id TEXT NOT NULL REFERENCES transactions (transaction_id),
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
        amount BIGINT NOT NULL CHECK (amount > 0),
        PRIMARY KEY (transaction_id, account_number, direction)
    );
    CREATE TABLE entries (
        entry_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount BIGINT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('open', 'deposit', 'debit', 'credit')),
        reference TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX entries_account ON entries (account_number);
    CREATE TABLE deposits (
        reference TEXT PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount BIGINT NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # 2: the hash of each account's link code (NULL: none yet).
    """
    ALTER TABLE accounts ADD COLUMN link_code_hash TEXT
    """,
]
