"""paygate.common.logs.safe_fields: only the named safe fields of a message reach a log line."""

from __future__ import annotations

from paygate.common.logs import LOGGED_IDS_MAX, LOGGED_TEXT_MAX, safe_fields, safe_metadata
from paygate.gen.paygate.bank.v1 import bank_pb2
from paygate.gen.paygate.v1 import gateway_pb2


def test_a_password_is_never_a_loggable_field() -> None:
    request = gateway_pb2.LoginRequest(username="alice", password="s3cret-pass")
    assert safe_fields(request) == {"username": "alice"}
    # Asked again (the field names of a type are remembered): the same answer.
    assert safe_fields(gateway_pb2.LoginRequest(username="bob", password="x")) == {
        "username": "bob"
    }


def test_a_token_is_never_a_loggable_field() -> None:
    assert safe_fields(gateway_pb2.LoginResponse(access_token="tok-123")) == {}


def test_a_payment_inside_a_response_is_logged_by_its_safe_fields() -> None:
    response = gateway_pb2.CreatePaymentResponse(
        payment=gateway_pb2.Payment(
            payment_id="pay_1",
            payee_username="bob",
            amount=250,
            currency="USD",
            description="rent, private note",
        )
    )
    assert safe_fields(response) == {
        "payment_id": "pay_1",
        "payee_username": "bob",
        "amount": 250,
        "currency": "USD",
    }


def test_unset_fields_and_other_objects_are_left_out() -> None:
    assert safe_fields(gateway_pb2.CreatePaymentRequest(amount=0, currency="")) == {}
    assert safe_fields(None) == {}
    assert safe_fields("not a message") == {}


def test_an_overlong_field_is_logged_cut_with_its_length() -> None:
    key = "k" * 60_000  # refused by the gateway, but logged before it is checked
    fields = safe_fields(gateway_pb2.CreatePaymentRequest(idempotency_key=key, amount=1))
    assert fields == {
        "idempotency_key": "k" * LOGGED_TEXT_MAX + "... (60000 characters)", "amount": 1
    }
    exactly_max = "a" * LOGGED_TEXT_MAX
    assert safe_fields(gateway_pb2.LoginRequest(username=exactly_max)) == {
        "username": exactly_max
    }


def test_an_enum_is_logged_by_its_name() -> None:
    response = gateway_pb2.CreatePaymentResponse(
        payment=gateway_pb2.Payment(payment_id="pay_1", status=gateway_pb2.PAYMENT_STATUS_FAILED)
    )
    assert safe_fields(response)["status"] == "PAYMENT_STATUS_FAILED"
    assert safe_fields(bank_pb2.PrepareResponse(vote=bank_pb2.VOTE_NO))["vote"] == "VOTE_NO"


def test_a_batch_is_logged_with_its_transaction_ids_bounded_and_counted() -> None:
    ids = [f"pay_{n}" for n in range(LOGGED_IDS_MAX + 5)]
    batch = bank_pb2.CommitBatchRequest(
        transactions=[bank_pb2.CommitRequest(transaction_id=i) for i in ids]
    )
    assert safe_fields(batch) == {
        "transactions": LOGGED_IDS_MAX + 5, "transaction_ids": ids[:LOGGED_IDS_MAX]
    }
    one = bank_pb2.AbortBatchRequest(transactions=[bank_pb2.AbortRequest(transaction_id="t")])
    assert safe_fields(one) == {"transactions": 1, "transaction_ids": ["t"]}


def test_only_safe_pairs_of_an_error_metadata_are_logged() -> None:
    metadata = {"payment_id": "pay_1", "outcome": "failed", "password": "s3cret"}
    assert safe_metadata(metadata) == {"payment_id": "pay_1", "outcome": "failed"}
