"""The gateway's schema: numbered migrations, in SQLite's and PostgreSQL's dialects.

The two lists are kept side by side so that a change to one is seen next to the other:
step N creates the same tables and columns in both (tests/test_store_contract.py checks
that they have the same steps and tables). Each database records the last step applied
(SQLite in `user_version`, PostgreSQL in `schema_migrations`) and runs the rest at start.
The columns the store reads and writes are declared once, in statements.py.
"""

from __future__ import annotations

SQLITE_MIGRATIONS = [
    # 1: users and sessions; payments with their two-phase-commit state; idempotency keys.
    """
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash BLOB NOT NULL,
        bank_id TEXT NOT NULL,
        account_number TEXT NOT NULL,
        currency TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
        created_at_s REAL NOT NULL,
        UNIQUE (bank_id, account_number)
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        expire_at_s REAL NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        created_at_s REAL NOT NULL
    );
    CREATE TABLE payments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        payment_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        txn_state TEXT NOT NULL CHECK (txn_state IN
            ('preparing', 'committing', 'aborting', 'committed', 'aborted')),
        payer_user_id TEXT NOT NULL REFERENCES users (user_id),
        payer_username TEXT NOT NULL,
        payer_bank_id TEXT NOT NULL,
        payer_account TEXT NOT NULL,
        payee_user_id TEXT NOT NULL REFERENCES users (user_id),
        payee_username TEXT NOT NULL,
        payee_bank_id TEXT NOT NULL,
        payee_account TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        description TEXT NOT NULL,
        failure_reason TEXT NOT NULL DEFAULT '',
        create_time_us INTEGER NOT NULL,
        decided_at_s REAL,
        finished_at_s REAL
    );
    CREATE INDEX payments_unfinished ON payments (txn_state)
        WHERE txn_state IN ('preparing', 'committing', 'aborting');
    CREATE TABLE payment_parties (
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES payments (seq),
        PRIMARY KEY (user_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency_keys (
        user_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
        payment_id TEXT NOT NULL,
        error_reason TEXT NOT NULL DEFAULT '',
        error_message TEXT NOT NULL DEFAULT '',
        created_at_s REAL NOT NULL,
        PRIMARY KEY (user_id, idempotency_key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_s);
    CREATE INDEX idempotency_keys_payment ON idempotency_keys (payment_id)
    """,
    # 2: failed logins, for the throttle; keyed by "user:NAME" and "address:PEER".
    """
    CREATE TABLE login_failures (
        throttle_key TEXT NOT NULL,
        failed_at_s REAL NOT NULL
    );
    CREATE INDEX login_failures_key ON login_failures (throttle_key, failed_at_s)
    """,
    # 3: a lease on each unfinished payment: which gateway drives it, and until when, so
    # that several gateways sharing one database never drive one transaction together.
    """
    ALTER TABLE payments ADD COLUMN lease_owner TEXT;
    ALTER TABLE payments ADD COLUMN lease_expires_at_s REAL;
    CREATE INDEX payments_lease ON payments (lease_expires_at_s)
        WHERE txn_state IN ('preparing', 'committing', 'aborting')
    """,
    # 4: whether the payment was sent as a one-phase commit (its only bank decides), so
    # that recovery asks that bank instead of presuming abort (gateway/transitions.py).
    """
    ALTER TABLE payments ADD COLUMN one_phase INTEGER NOT NULL DEFAULT 0
        CHECK (one_phase IN (0, 1))
    """,
    # 5: housekeeping deletes expired sessions and old login failures by time: without
    # these, each pass read the whole table.
    """
    CREATE INDEX sessions_expire ON sessions (expire_at_s);
    CREATE INDEX login_failures_at ON login_failures (failed_at_s)
    """,
    # 6: authorizations (manual capture): the state `authorized`, the statuses
    # `requires_capture` and `canceled`, the deadline, and the amount captured (never more
    # than authorized). SQLite cannot widen a CHECK in place: the table is first rebuilt
    # with the same columns and the wider checks, as its documentation prescribes (the
    # runner turns foreign keys off while migrating and checks them before each commit;
    # the rebuild's names are quoted, as it creates nothing that stays), then the columns
    # are added as on PostgreSQL.
    """
    CREATE TABLE "payments_rebuilt" (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        payment_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'requires_capture', 'succeeded', 'failed', 'canceled')),
        txn_state TEXT NOT NULL CHECK (txn_state IN
            ('preparing', 'authorized', 'committing', 'aborting', 'committed', 'aborted')),
        payer_user_id TEXT NOT NULL REFERENCES users (user_id),
        payer_username TEXT NOT NULL,
        payer_bank_id TEXT NOT NULL,
        payer_account TEXT NOT NULL,
        payee_user_id TEXT NOT NULL REFERENCES users (user_id),
        payee_username TEXT NOT NULL,
        payee_bank_id TEXT NOT NULL,
        payee_account TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        description TEXT NOT NULL,
        failure_reason TEXT NOT NULL DEFAULT '',
        create_time_us INTEGER NOT NULL,
        decided_at_s REAL,
        finished_at_s REAL,
        lease_owner TEXT,
        lease_expires_at_s REAL,
        one_phase INTEGER NOT NULL DEFAULT 0 CHECK (one_phase IN (0, 1))
    );
    INSERT INTO "payments_rebuilt" SELECT seq, payment_id, status, txn_state, payer_user_id,
        payer_username, payer_bank_id, payer_account, payee_user_id, payee_username,
        payee_bank_id, payee_account, amount, currency, description, failure_reason,
        create_time_us, decided_at_s, finished_at_s, lease_owner, lease_expires_at_s, one_phase
        FROM payments;
    DROP TABLE payments;
    ALTER TABLE "payments_rebuilt" RENAME TO payments;
    CREATE INDEX "payments_unfinished" ON payments (txn_state)
        WHERE txn_state IN ('preparing', 'committing', 'aborting');
    CREATE INDEX "payments_lease" ON payments (lease_expires_at_s)
        WHERE txn_state IN ('preparing', 'committing', 'aborting');
    ALTER TABLE payments ADD COLUMN capture_method TEXT NOT NULL DEFAULT 'automatic'
        CHECK (capture_method IN ('automatic', 'manual'));
    ALTER TABLE payments ADD COLUMN capture_before_us INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE payments ADD COLUMN amount_captured INTEGER NOT NULL DEFAULT 0
        CHECK (amount_captured >= 0 AND amount_captured <= amount);
    CREATE INDEX payments_authorized ON payments (capture_before_us)
        WHERE txn_state = 'authorized'
    """,
    # 7: sessions a user can list and end one by one: a public id (random, unrelated to
    # the token), the client's address at login, and when the session was last used.
    """
    ALTER TABLE sessions ADD COLUMN session_id TEXT;
    ALTER TABLE sessions ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN last_used_at_s REAL;
    UPDATE sessions SET session_id = 'ses_' || lower(hex(randomblob(12)));
    CREATE UNIQUE INDEX sessions_id ON sessions (session_id);
    CREATE INDEX sessions_user ON sessions (user_id)
    """,
    # 8: two-factor login. The TOTP secret, sealed with the gateway's key (gateway/totp.py):
    # `totp_pending` between EnrollTotp and ConfirmTotp, then `totp_secret`; the last time
    # step a code was accepted for (each is accepted once); recovery codes as hashes.
    """
    ALTER TABLE users ADD COLUMN totp_secret BLOB;
    ALTER TABLE users ADD COLUMN totp_pending BLOB;
    ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
    CREATE TABLE recovery_codes (
        user_id TEXT NOT NULL REFERENCES users (user_id),
        code_hash TEXT NOT NULL,
        used_at_s REAL,
        PRIMARY KEY (user_id, code_hash)
    ) WITHOUT ROWID
    """,
    # 9: refunds. A refund is a transaction of its own in the payments table, from the
    # payment's payee back to its payer, naming the payment it refunds in `refund_of`
    # (gateway/refunds.py). The refunds of a payment are found by that column; the payment's
    # `amount_refunded` grows in the database transaction that records a refund's commit.
    """
    ALTER TABLE payments ADD COLUMN refund_of TEXT;
    ALTER TABLE payments ADD COLUMN amount_refunded INTEGER NOT NULL DEFAULT 0
        CHECK (amount_refunded >= 0 AND amount_refunded <= amount);
    CREATE INDEX payments_refunds ON payments (refund_of, seq) WHERE refund_of IS NOT NULL
    """,
    # 10: events. Each change a user should know about writes one row per party in the
    # same database transaction as the change (gateway/store_events.py). `sequence` is the
    # user's own, counted in `users.event_seq`: the row's lock makes the user's events
    # commit in sequence order, with no gap. `published` is the relay's mark.
    """
    ALTER TABLE users ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        sequence INTEGER NOT NULL,
        type TEXT NOT NULL,
        create_time_us INTEGER NOT NULL,
        payment_id TEXT NOT NULL,
        body TEXT NOT NULL,
        published INTEGER NOT NULL DEFAULT 0,
        UNIQUE (user_id, sequence)
    );
    CREATE INDEX events_unpublished ON events (id) WHERE published = 0;
    CREATE INDEX events_created ON events (create_time_us)
    """,
    # 11: operators (AdminService). A frozen user can neither log in, pay nor be paid; every
    # change an operator makes is recorded in operator_actions with the name on their
    # certificate (gateway/operators.py). The stored role, which nothing read, goes:
    # operators are certificates, not users (DROP COLUMN needs SQLite 3.35, of 2021).
    """
    ALTER TABLE users DROP COLUMN role;
    ALTER TABLE users ADD COLUMN frozen INTEGER NOT NULL DEFAULT 0 CHECK (frozen IN (0, 1));
    CREATE TABLE operator_actions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_s REAL NOT NULL,
        operator TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('freeze', 'unfreeze', 'reset_two_factor')),
        user_id TEXT NOT NULL REFERENCES users (user_id),
        username TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        changed INTEGER NOT NULL CHECK (changed IN (0, 1))
    );
    CREATE INDEX operator_actions_user ON operator_actions (user_id, seq)
    """,
    # 12: the relay's lease (services/paygate/relay): one row naming the relay that
    # publishes events to the broker, and until when. A relay takes or renews it with a
    # conditional UPDATE, so that two relays never publish at once.
    """
    CREATE TABLE relay_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        expires_at_s REAL NOT NULL
    );
    INSERT INTO relay_lease (id, owner, expires_at_s) VALUES (1, '', 0)
    """,
    # 13: split payments: the parts, as JSON ([[payee user id, username, bank, account,
    # amount], ...] in the order asked); NULL for a payment to one payee. Every payee is a
    # party (payment_parties), so each lists the payment and gets its events.
    """
    ALTER TABLE payments ADD COLUMN splits TEXT
    """,
]


POSTGRES_MIGRATIONS = [
    # 1: users and sessions; payments with their two-phase-commit state; idempotency keys.
    """
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        username TEXT NOT NULL CONSTRAINT users_username_unique UNIQUE,
        password_hash BYTEA NOT NULL,
        bank_id TEXT NOT NULL,
        account_number TEXT NOT NULL,
        currency TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
        created_at_s DOUBLE PRECISION NOT NULL,
        CONSTRAINT users_account_unique UNIQUE (bank_id, account_number)
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        expire_at_s DOUBLE PRECISION NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE,
        created_at_s DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE payments (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        payment_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        txn_state TEXT NOT NULL CHECK (txn_state IN
            ('preparing', 'committing', 'aborting', 'committed', 'aborted')),
        payer_user_id TEXT NOT NULL REFERENCES users (user_id),
        payer_username TEXT NOT NULL,
        payer_bank_id TEXT NOT NULL,
        payer_account TEXT NOT NULL,
        payee_user_id TEXT NOT NULL REFERENCES users (user_id),
        payee_username TEXT NOT NULL,
        payee_bank_id TEXT NOT NULL,
        payee_account TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        description TEXT NOT NULL,
        failure_reason TEXT NOT NULL DEFAULT '',
        create_time_us BIGINT NOT NULL,
        decided_at_s DOUBLE PRECISION,
        finished_at_s DOUBLE PRECISION
    );
    CREATE INDEX payments_unfinished ON payments (txn_state)
        WHERE txn_state IN ('preparing', 'committing', 'aborting');
    CREATE TABLE payment_parties (
        user_id TEXT NOT NULL,
        seq BIGINT NOT NULL REFERENCES payments (seq),
        PRIMARY KEY (user_id, seq)
    );
    CREATE TABLE idempotency_keys (
        user_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
        payment_id TEXT NOT NULL,
        error_reason TEXT NOT NULL DEFAULT '',
        error_message TEXT NOT NULL DEFAULT '',
        created_at_s DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (user_id, idempotency_key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_s);
    CREATE INDEX idempotency_keys_payment ON idempotency_keys (payment_id)
    """,
    # 2: failed logins, for the throttle; keyed by "user:NAME" and "address:PEER".
    """
    CREATE TABLE login_failures (
        throttle_key TEXT NOT NULL,
        failed_at_s DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX login_failures_key ON login_failures (throttle_key, failed_at_s)
    """,
    # 3: a lease on each unfinished payment: which gateway drives it, and until when.
    """
    ALTER TABLE payments ADD COLUMN lease_owner TEXT;
    ALTER TABLE payments ADD COLUMN lease_expires_at_s DOUBLE PRECISION;
    CREATE INDEX payments_lease ON payments (lease_expires_at_s)
        WHERE txn_state IN ('preparing', 'committing', 'aborting')
    """,
    # 4: whether the payment was sent as a one-phase commit.
    """
    ALTER TABLE payments ADD COLUMN one_phase BOOLEAN NOT NULL DEFAULT FALSE
    """,
    # 5: indexes for housekeeping's deletes by time.
    """
    CREATE INDEX sessions_expire ON sessions (expire_at_s);
    CREATE INDEX login_failures_at ON login_failures (failed_at_s)
    """,
    # 6: authorizations (manual capture): the state `authorized`, the statuses
    # `requires_capture` and `canceled`, the deadline, and the amount captured.
    """
    ALTER TABLE payments DROP CONSTRAINT payments_status_check;
    ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
        ('pending', 'requires_capture', 'succeeded', 'failed', 'canceled'));
    ALTER TABLE payments DROP CONSTRAINT payments_txn_state_check;
    ALTER TABLE payments ADD CONSTRAINT payments_txn_state_check CHECK (txn_state IN
        ('preparing', 'authorized', 'committing', 'aborting', 'committed', 'aborted'));
    ALTER TABLE payments ADD COLUMN capture_method TEXT NOT NULL DEFAULT 'automatic'
        CHECK (capture_method IN ('automatic', 'manual'));
    ALTER TABLE payments ADD COLUMN capture_before_us BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE payments ADD COLUMN amount_captured BIGINT NOT NULL DEFAULT 0
        CHECK (amount_captured >= 0 AND amount_captured <= amount);
    CREATE INDEX payments_authorized ON payments (capture_before_us)
        WHERE txn_state = 'authorized'
    """,
    # 7: sessions a user can list and end one by one.
    """
    ALTER TABLE sessions ADD COLUMN session_id TEXT;
    ALTER TABLE sessions ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN last_used_at_s DOUBLE PRECISION;
    UPDATE sessions SET session_id = 'ses_' || replace(gen_random_uuid()::text, '-', '');
    CREATE UNIQUE INDEX sessions_id ON sessions (session_id);
    CREATE INDEX sessions_user ON sessions (user_id)
    """,
    # 8: two-factor login.
    """
    ALTER TABLE users ADD COLUMN totp_secret BYTEA;
    ALTER TABLE users ADD COLUMN totp_pending BYTEA;
    ALTER TABLE users ADD COLUMN totp_last_step BIGINT;
    CREATE TABLE recovery_codes (
        user_id TEXT NOT NULL REFERENCES users (user_id),
        code_hash TEXT NOT NULL,
        used_at_s DOUBLE PRECISION,
        PRIMARY KEY (user_id, code_hash)
    )
    """,
    # 9: refunds.
    """
    ALTER TABLE payments ADD COLUMN refund_of TEXT;
    ALTER TABLE payments ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0
        CHECK (amount_refunded >= 0 AND amount_refunded <= amount);
    CREATE INDEX payments_refunds ON payments (refund_of, seq) WHERE refund_of IS NOT NULL
    """,  # 10: events.
    """
    ALTER TABLE users ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        sequence BIGINT NOT NULL,
        type TEXT NOT NULL,
        create_time_us BIGINT NOT NULL,
        payment_id TEXT NOT NULL,
        body TEXT NOT NULL,
        published SMALLINT NOT NULL DEFAULT 0,
        UNIQUE (user_id, sequence)
    );
    CREATE INDEX events_unpublished ON events (id) WHERE published = 0;
    CREATE INDEX events_created ON events (create_time_us)
    """,
    # 11: operators: frozen users, the audit table of operator actions; the unread role goes.
    """
    ALTER TABLE users DROP COLUMN role;
    ALTER TABLE users ADD COLUMN frozen BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE operator_actions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_s DOUBLE PRECISION NOT NULL,
        operator TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('freeze', 'unfreeze', 'reset_two_factor')),
        user_id TEXT NOT NULL REFERENCES users (user_id),
        username TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        changed BOOLEAN NOT NULL
    );
    CREATE INDEX operator_actions_user ON operator_actions (user_id, seq)
    """,
    # 12: the relay's lease.
    """
    CREATE TABLE relay_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        expires_at_s DOUBLE PRECISION NOT NULL
    );
    INSERT INTO relay_lease (id, owner, expires_at_s) VALUES (1, '', 0)
    """,
    # 13: split payments: the parts, as JSON ([[payee user id, username, bank, account,
    # amount], ...] in the order asked); NULL for a payment to one payee. Every payee is a
    # party (payment_parties), so each lists the payment and gets its events.
    """
    ALTER TABLE payments ADD COLUMN splits TEXT
    """,
]
