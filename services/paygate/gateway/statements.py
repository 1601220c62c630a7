"""The gateway's tables and statements, each written once for SQLite and PostgreSQL.

USERS and PAYMENTS declare the columns the store reads and writes, each with the field of
the record it holds (common/sql.py's Table); GatewaySql holds every statement, written with
named parameters and compiled for one dialect. What the two databases do differently is
named where a statement uses it (`d.skip_locked`, `d.returning`, `d.bounded_delete`).
"""

from __future__ import annotations

import json

from paygate.common.sql import Column, Dialect, Table
from paygate.gateway.models import (
    LEASED_SQL,
    UNFINISHED_SQL,
    Payment,
    PaymentStatus,
    Split,
    TxnState,
    User,
)


def _is_manual(capture_method: str) -> bool:
    return capture_method == "manual"


def _capture_method(manual: bool) -> str:
    return "manual" if manual else "automatic"


def _text_or_empty(value: str | None) -> str:
    return value or ""


def _text_or_null(value: str) -> str | None:
    return value or None


def load_splits(text: str | None) -> tuple[Split, ...]:
    if not text:
        return ()
    return tuple(
        Split(payee_user_id=user_id, payee_username=username, payee_bank_id=bank_id,
              payee_account=account, amount_minor=int(amount))
        for user_id, username, bank_id, account, amount in json.loads(text)
    )  # fmt: skip


def dump_splits(splits: tuple[Split, ...]) -> str | None:
    if not splits:
        return None
    return json.dumps(
        [[s.payee_user_id, s.payee_username, s.payee_bank_id, s.payee_account, s.amount_minor]
         for s in splits],
        separators=(",", ":"),
    )  # fmt: skip


USERS = Table("users", User, ("user_id", "username", "bank_id", "account_number", "currency"))
PAYMENTS = Table(
    "payments",
    Payment,
    (
        "payment_id",
        Column("status", load=PaymentStatus, dump=str),
        Column("txn_state", load=TxnState, dump=str),
        "payer_user_id",
        "payer_username",
        "payer_bank_id",
        "payer_account",
        "payee_user_id",
        "payee_username",
        "payee_bank_id",
        "payee_account",
        Column("amount", field="amount_minor"),
        "currency",
        "description",
        "failure_reason",
        "create_time_us",
        Column("one_phase", load=bool),  # SQLite stores 0 or 1
        Column("capture_method", field="manual_capture", load=_is_manual, dump=_capture_method),
        "capture_before_us",
        Column("amount_captured", field="amount_captured_minor"),
        Column("refund_of", load=_text_or_empty, dump=_text_or_null),
        Column("amount_refunded", field="amount_refunded_minor"),
        Column("splits", load=load_splits, dump=dump_splits),
    ),
)


class GatewaySql:
    """The gateway's statements in one dialect."""

    def __init__(self, d: Dialect) -> None:
        sql = d.compile
        self.username_taken = sql("SELECT 1 FROM users WHERE username = :username")
        self.account_linked = sql(
            "SELECT 1 FROM users WHERE bank_id = :bank_id AND account_number = :account_number"
        )
        self.insert_user = sql(
            f"INSERT INTO users ({USERS.columns}, password_hash, created_at_s)"
            f" VALUES ({USERS.params}, :password_hash, :created_at_s)"
        )
        self.user_by_username = sql(
            f"SELECT {USERS.columns}, password_hash FROM users WHERE username = :username"
        )
        # A login's session is recorded only for a user who is not frozen. On PostgreSQL
        # the user's row is locked against a concurrent freeze meanwhile: the freeze then
        # waits, and ends this session too (or the login waits, and sees the freeze).
        self.frozen_for_login = sql(
            f"SELECT frozen FROM users WHERE user_id = :user_id{d.for_share}"
        )
        self.insert_session = sql(
            "INSERT INTO sessions (token_hash, user_id, expire_at_s, created_at_s, session_id,"
            " client_address, last_used_at_s) VALUES (:token_hash, :user_id, :expire_at_s,"
            " :created_at_s, :session_id, :client_address, :created_at_s)"
        )
        # Which of a payment's two parties is frozen (no row lock: a payment recorded while
        # a freeze is being written was made before it).
        self.frozen_parties = sql(
            "SELECT user_id FROM users WHERE user_id IN (:payer_user_id, :payee_user_id)"
            " AND frozen = TRUE"
        )
        self.session = sql(
            f"SELECT {USERS.qualified('u')}, s.expire_at_s, (s.revoked OR u.frozen), s.session_id,"
            " COALESCE(s.last_used_at_s, s.created_at_s)"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id WHERE s.token_hash = :token"
        )
        self.revoke_session = sql("UPDATE sessions SET revoked = TRUE WHERE token_hash = :token")
        self.touch_session = sql(
            "UPDATE sessions SET last_used_at_s = :at_s WHERE token_hash = :token"
        )
        self.live_sessions = sql(
            "SELECT session_id, token_hash, created_at_s,"
            " COALESCE(last_used_at_s, created_at_s), expire_at_s, client_address"
            " FROM sessions WHERE user_id = :user_id AND revoked = FALSE"
            " AND expire_at_s > :now_s ORDER BY created_at_s DESC LIMIT :limit"
        )
        self.revoke_session_by_id = sql(
            "UPDATE sessions SET revoked = TRUE WHERE session_id = :session_id"
            " AND user_id = :user_id AND revoked = FALSE RETURNING token_hash"
        )
        # Every live session of a user but one (:keep, '' for none): their token hashes,
        # for the session cache to forget.
        self.revoke_sessions_of = sql(
            "UPDATE sessions SET revoked = TRUE WHERE user_id = :user_id AND revoked = FALSE"
            " AND expire_at_s > :now_s AND token_hash <> :keep RETURNING token_hash"
        )
        self.set_password = sql(
            "UPDATE users SET password_hash = :password_hash WHERE user_id = :user_id"
        )
        self.totp = sql(
            "SELECT totp_secret, totp_pending, totp_last_step,"
            " (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = u.user_id"
            " AND r.used_at_s IS NULL) FROM users u WHERE u.user_id = :user_id"
        )
        self.set_totp_pending = sql(
            "UPDATE users SET totp_pending = :sealed WHERE user_id = :user_id"
        )
        # Conditional on the secret the user confirmed a code of: a second EnrollTotp
        # meanwhile replaced it, and this confirmation must not turn on the other one.
        self.enable_totp = sql(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL,"
            " totp_last_step = :step WHERE user_id = :user_id AND totp_pending = :sealed"
        )
        # Each time step once: of two gateways checking one code at once, one wins.
        self.use_totp_step = sql(
            "UPDATE users SET totp_last_step = :step WHERE user_id = :user_id"
            " AND totp_secret IS NOT NULL"
            " AND (totp_last_step IS NULL OR totp_last_step < :step)"
        )
        self.disable_totp = sql(
            "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL"
            " WHERE user_id = :user_id"
        )
        self.delete_recovery_codes = sql("DELETE FROM recovery_codes WHERE user_id = :user_id")
        self.insert_recovery_code = sql(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (:user_id, :code_hash)"
        )
        self.use_recovery_code = sql(
            "UPDATE recovery_codes SET used_at_s = :at_s WHERE user_id = :user_id"
            " AND code_hash = :code_hash AND used_at_s IS NULL"
        )
        # The key first: of two requests with one key, the second waits for the first's
        # row (PostgreSQL) and then conflicts, so only one records a payment.
        self.claim_key = sql(
            "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state,"
            " payment_id, created_at_s)"
            " VALUES (:payer_user_id, :key, :request_hash, 'in_progress', :payment_id, :now_s)"
            " ON CONFLICT DO NOTHING"
        )
        self.key = sql(
            "SELECT request_hash, state, payment_id, error_reason, error_message"
            " FROM idempotency_keys WHERE user_id = :payer_user_id AND idempotency_key = :key"
        )
        self.insert_payment = sql(
            f"INSERT INTO payments ({PAYMENTS.columns}, lease_owner, lease_expires_at_s)"
            f" VALUES ({PAYMENTS.params}, :lease_owner, :lease_expires_at_s){d.returning('seq')}"
        )
        self.insert_party = sql(
            "INSERT INTO payment_parties (user_id, seq) VALUES (:user_id, :seq)"
        )
        # Decisions are conditional on 'preparing', so exactly one is ever written: PostgreSQL
        # re-checks the condition on the newest row after waiting for a concurrent writer.
        self.decide_commit = sql(
            "UPDATE payments SET txn_state = :state, status = 'succeeded',"
            " decided_at_s = :now_s, finished_at_s = :finished_at_s"
            " WHERE payment_id = :payment_id AND txn_state = 'preparing'"
        )
        self.decide_abort = sql(
            "UPDATE payments SET txn_state = 'aborting', status = 'failed',"
            " failure_reason = :reason, decided_at_s = :now_s"
            " WHERE payment_id = :payment_id AND txn_state = 'preparing'"
        )
        # An authorization's life: AUTHORIZED is written from 'preparing' like a decision;
        # a capture or a cancellation only from 'authorized', so that of a capture, a
        # cancellation and an expiry racing, exactly one is written. Its writer takes the
        # lease: it delivers the decision.
        self.authorize = sql(
            "UPDATE payments SET txn_state = 'authorized', status = 'requires_capture',"
            " decided_at_s = :now_s WHERE payment_id = :payment_id AND txn_state = 'preparing'"
        )
        self.capture = sql(
            "UPDATE payments SET txn_state = 'committing', status = 'succeeded',"
            " amount_captured = :amount, decided_at_s = :now_s, lease_owner = :owner,"
            " lease_expires_at_s = :expires_at_s"
            " WHERE payment_id = :payment_id AND txn_state = 'authorized'"
        )
        self.cancel = sql(
            "UPDATE payments SET txn_state = 'aborting', status = 'canceled',"
            " failure_reason = :reason, decided_at_s = :now_s, lease_owner = :owner,"
            " lease_expires_at_s = :expires_at_s"
            " WHERE payment_id = :payment_id AND txn_state = 'authorized'"
        )
        self.insert_completed_key = sql(
            "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state,"
            " payment_id, created_at_s)"
            " VALUES (:user_id, :key, :request_hash, 'completed', :payment_id, :now_s)"
        )
        self.operation_key = sql(
            "SELECT request_hash, state, payment_id, error_reason, error_message"
            " FROM idempotency_keys WHERE user_id = :user_id AND idempotency_key = :key"
        )
        # Authorizations past their deadline, free or already the owner's, for recovery
        # to expire; through a partial index of authorizations only.
        self.claim_expired = sql(
            "UPDATE payments SET lease_owner = :owner, lease_expires_at_s = :expires_at_s"
            " WHERE seq IN (SELECT seq FROM payments WHERE txn_state = 'authorized'"
            " AND capture_before_us <= :now_us"
            " AND (lease_owner IS NULL OR lease_expires_at_s <= :now_s OR lease_owner = :owner)"
            f" ORDER BY capture_before_us LIMIT :limit{d.skip_locked})"
            f" RETURNING seq, {PAYMENTS.columns}"
        )
        self.count_expired = sql(
            "SELECT COUNT(*) FROM payments WHERE txn_state = 'authorized'"
            " AND capture_before_us <= :now_us"
        )
        self.complete_key = sql(
            "UPDATE idempotency_keys SET state = 'completed' WHERE payment_id = :payment_id"
        )
        self.refuse_key = sql(
            "UPDATE idempotency_keys SET state = 'completed', error_reason = :reason,"
            " error_message = :message WHERE payment_id = :payment_id"
        )
        self.release_key = sql("DELETE FROM idempotency_keys WHERE payment_id = :payment_id")
        self.txn_state = sql("SELECT txn_state FROM payments WHERE payment_id = :payment_id")
        self.finish = sql(
            "UPDATE payments SET txn_state = :state, finished_at_s = :finished_at_s"
            " WHERE payment_id = :payment_id AND txn_state = :decided"
        )
        # Refunds (gateway/refunds.py). The payment refunded is read with a write lock
        # (PostgreSQL; SQLite has one writer), so that of two refunds of one payment the
        # second sees the first's reservation: every refund not aborted counts.
        self.refunded_payment = sql(
            f"SELECT {PAYMENTS.columns} FROM payments WHERE payment_id = :refund_of{d.for_update}"
        )
        # A refund refused for its amount or its payment keeps that answer under its key
        # (as a payment's business refusal does), naming the payment it would have refunded.
        self.insert_refused_key = sql(
            "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state,"
            " payment_id, error_reason, error_message, created_at_s) VALUES (:payer_user_id,"
            " :key, :request_hash, 'completed', :refund_of, :reason, :message, :now_s)"
            " ON CONFLICT DO NOTHING"
        )
        self.refunds_reserved = sql(
            "SELECT COALESCE(SUM(amount), 0) FROM payments WHERE refund_of = :refund_of"
            " AND txn_state NOT IN ('aborting', 'aborted')"
        )
        # The parts of a split payment's refunds that are not aborted (each payee's).
        self.refund_parts = sql(
            "SELECT splits FROM payments WHERE refund_of = :refund_of"
            " AND txn_state NOT IN ('aborting', 'aborted') AND splits IS NOT NULL"
        )
        self.add_refunded = sql(
            "UPDATE payments SET amount_refunded = amount_refunded + :amount"
            " WHERE payment_id = :refund_of"
        )
        self.refunds_of = sql(
            f"SELECT seq, {PAYMENTS.columns} FROM payments"
            " WHERE refund_of = :payment_id AND seq > :after_seq ORDER BY seq LIMIT :limit"
        )
        # Events (gateway/store_events.py): the user's row counts its events; updating it
        # holds its lock until commit, so one user's events commit in sequence order.
        self.next_event_seq = sql(
            "UPDATE users SET event_seq = event_seq + 1 WHERE user_id = :user_id"
            " RETURNING event_seq"
        )
        self.insert_event = sql(
            "INSERT INTO events (event_id, user_id, sequence, type, create_time_us, payment_id,"
            " body) VALUES (:event_id, :user_id, :sequence, :type, :create_time_us,"
            " :payment_id, :body)"
        )
        self.events_of = sql(
            "SELECT event_id, sequence, type, create_time_us, body FROM events"
            " WHERE user_id = :user_id AND sequence > :after ORDER BY sequence LIMIT :limit"
        )
        self.event_bounds = sql(
            "SELECT u.event_seq, (SELECT MIN(e.sequence) FROM events e"
            " WHERE e.user_id = u.user_id) FROM users u WHERE u.user_id = :user_id"
        )
        self.payment = sql(
            f"SELECT {PAYMENTS.columns} FROM payments WHERE payment_id = :payment_id"
        )
        self.payments_of = sql(
            f"SELECT p.seq, {PAYMENTS.qualified('p')}"
            " FROM payment_parties pp JOIN payments p ON p.seq = pp.seq"
            " WHERE pp.user_id = :user_id AND pp.seq < :before_seq"
            " ORDER BY pp.seq DESC LIMIT :limit"
        )
        self.count_unfinished = sql(
            f"SELECT COUNT(*) FROM payments WHERE txn_state IN {UNFINISHED_SQL}"
            " AND create_time_us < :created_before_us"
        )
        # Recovery's claim: the unfinished payments that are free or already the owner's,
        # those leased longest ago first (oldest first among equals). Not simply the oldest:
        # payments stuck at a dead bank, which recovery tries again and again (and so leases
        # again and again), would then fill every claim and starve the ones behind them.
        # Through a partial index of unfinished payments, so its cost does not grow with the
        # number of finished payments (tests/unit/test_gateway_store_plans.py checks the
        # plan). On PostgreSQL a row another gateway is claiming right now is skipped, and
        # one it has just claimed fails the re-checked "free" condition.
        self.claim = sql(
            "UPDATE payments SET lease_owner = :owner, lease_expires_at_s = :expires_at_s"
            f" WHERE seq IN (SELECT seq FROM payments WHERE txn_state IN {UNFINISHED_SQL}"
            " AND (lease_owner IS NULL OR lease_expires_at_s <= :now_s OR lease_owner = :owner)"
            f" ORDER BY lease_expires_at_s NULLS FIRST, seq LIMIT :limit{d.skip_locked})"
            f" RETURNING seq, {PAYMENTS.columns}"
        )
        self.renew_lease = sql(
            "UPDATE payments SET lease_expires_at_s = :expires_at_s WHERE payment_id = :payment_id"
            f" AND lease_owner = :owner AND txn_state IN {LEASED_SQL}"
        )
        self.login_failures = sql(
            "SELECT failed_at_s FROM login_failures WHERE throttle_key = :key"
            " AND failed_at_s >= :since_s ORDER BY failed_at_s"
        )
        self.record_login_failure = sql(
            "INSERT INTO login_failures (throttle_key, failed_at_s) VALUES (:key, :at_s)"
        )
        self.clear_login_failures = sql("DELETE FROM login_failures WHERE throttle_key = :key")
        self.prune_sessions = d.bounded_delete("sessions", "expire_at_s < :before")
        self.prune_idempotency_keys = d.bounded_delete(
            "idempotency_keys", "created_at_s < :before AND state = 'completed'"
        )
        self.prune_login_failures = d.bounded_delete("login_failures", "failed_at_s < :before")
        self.prune_events = d.bounded_delete("events", "create_time_us < :before")
        self._operators(d)

    def _operators(self, d: Dialect) -> None:
        """AdminService's statements (gateway/operators.py)."""
        sql = d.compile
        self.user_status = sql(
            f"SELECT {USERS.qualified('u')}, u.created_at_s, u.frozen,"
            " u.totp_secret IS NOT NULL,"
            " (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = u.user_id"
            " AND r.used_at_s IS NULL),"
            " (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.user_id"
            " AND s.revoked = FALSE AND s.expire_at_s > :now_s)"
            " FROM users u WHERE u.username = :username"
        )
        self.recent_actions = sql(
            "SELECT at_s, operator, action, reason, changed FROM operator_actions"
            " WHERE user_id = :user_id ORDER BY seq DESC LIMIT :limit"
        )
        # The user an operator acts on, locked on PostgreSQL until the action is recorded,
        # so that two operators acting at once are recorded one after the other.
        self.user_for_action = sql(
            f"SELECT user_id FROM users WHERE username = :username{d.for_update}"
        )
        self.set_frozen = sql(
            "UPDATE users SET frozen = :frozen WHERE user_id = :user_id AND frozen <> :frozen"
        )
        self.reset_totp = sql(
            "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL"
            " WHERE user_id = :user_id AND (totp_secret IS NOT NULL"
            " OR totp_pending IS NOT NULL OR totp_last_step IS NOT NULL)"
        )
        self.insert_action = sql(
            "INSERT INTO operator_actions (at_s, operator, action, user_id, username, reason,"
            " changed) VALUES (:at_s, :operator, :action, :user_id, :username, :reason,"
            " :changed)"
        )
