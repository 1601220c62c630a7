"""The security boundary in-process: who may call a bank, and what a user can reach.
(The login throttle and the refusal of a readable key: tests/test_security.py.)
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paygate.errors import BANK_UNAVAILABLE, Unavailable
from paygate.gateway.banks import BankClients
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import SuiteClient, load_gen_certs
from users import PASSWORD, new_user

RPC_TIMEOUT_S = 10.0


def _pem(key, cert) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _bank_call_with(suite: SuiteClient, key_pem: bytes, cert_pem: bytes) -> grpc.RpcError:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(suite.config.certs_dir / "ca.pem").read_bytes(),
        private_key=key_pem,
        certificate_chain=cert_pem,
    )
    with grpc.secure_channel(suite.bank_target("bank-a"), credentials) as channel:
        stub = bank_pb2_grpc.BankServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetAccount(
                bank_pb2.GetAccountRequest(account_number="100001"), timeout=RPC_TIMEOUT_S
            )
    return info.value


def test_the_gateway_refuses_a_bank_whose_certificate_names_another_bank(
    suite: SuiteClient,
) -> None:
    """Every certificate of the suite also names 127.0.0.1: the gateway must check that the
    bank it dials is that bank (a DNS name in its certificate), or bank-b, or anyone with a
    certificate of the CA, could answer as bank-a and vote yes without holding money."""
    account = suite.admin_open_account("bank-b", 1_00)
    tls = suite.config.tls_for("gateway")
    impostor = suite.config.banks["bank-b"].listen  # bank-b, dialled as bank-a

    async def get_account_as(bank_id: str) -> str:
        banks = BankClients({bank_id: impostor}, tls)
        try:
            found = await banks.get_account(bank_id, account, timeout_s=2.0)
            return found.account_number
        except Unavailable as error:
            return error.reason
        finally:
            await banks.close()

    assert asyncio.run(get_account_as("bank-b")) == account  # the real bank-b answers
    assert asyncio.run(get_account_as("bank-a")) == BANK_UNAVAILABLE


def test_a_self_signed_client_certificate_fails_the_handshake(suite: SuiteClient) -> None:
    gen = load_gen_certs()
    now = datetime.datetime.now(datetime.UTC)
    rogue_ca_key, rogue_ca = gen.make_ca(now)
    key, cert = gen.make_leaf("gateway", rogue_ca_key, rogue_ca, now)  # claims to be the gateway
    error = _bank_call_with(suite, *_pem(key, cert))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_valid_certificate_of_another_identity_is_permission_denied(suite: SuiteClient) -> None:
    gen = load_gen_certs()
    certs = suite.config.certs_dir
    ca_key = serialization.load_pem_private_key((certs / "ca-key.pem").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    key, cert = gen.make_leaf("alice", ca_key, ca_cert, datetime.datetime.now(datetime.UTC))
    error = _bank_call_with(suite, *_pem(key, cert))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "alice" in (error.details() or "")


def test_a_bank_cannot_be_called_without_a_certificate(suite: SuiteClient) -> None:
    with suite.bank_channel_sync("bank-b", identity=None) as channel:
        with pytest.raises(grpc.RpcError) as info:
            bank_pb2_grpc.BankServiceStub(channel).Prepare(
                bank_pb2.PrepareRequest(transaction_id="t"), timeout=RPC_TIMEOUT_S
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_gateway_certificate_may_not_deposit(suite: SuiteClient) -> None:
    with suite.bank_channel_sync("bank-a", identity="gateway") as channel:
        with pytest.raises(grpc.RpcError) as info:
            bank_pb2_grpc.BankServiceStub(channel).Deposit(
                bank_pb2.DepositRequest(
                    account_number="100001", amount=100, currency="USD", reference=uuid.uuid4().hex
                ),
                timeout=RPC_TIMEOUT_S,
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def channel(suite: SuiteClient) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


def test_a_user_cannot_reach_another_users_money_or_payments(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 50_00, "alice")
    bob = new_user(suite, channel, "bank-b", 50_00, "bob")
    carol = new_user(suite, channel, "bank-c", 0, "carol")
    bobs_payment = bob.pay(carol, 10_00)

    # Reading: another's payment is indistinguishable from one that does not exist.
    with pytest.raises(grpc.RpcError) as info:
        alice.get_payment(bobs_payment.payment_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert alice.list_payments().payments == []
    assert alice.balance().balance == 50_00  # her own, whatever she asks

    # Paying: the payer is always the token's user; there is no field naming the payer.
    alice.pay(carol, 1_00, description=f"from {bob.username}")
    assert bob.bank_account().balance == 40_00
    # Forged or borrowed credentials do not work.
    for metadata in (
        [("authorization", "Bearer " + uuid.uuid4().hex)],
        [("authorization", f"Bearer {bob.token[:-1]}x")],
        [("authorization", f"Basic {bob.username}:{PASSWORD}")],
        [("x-user", bob.username)],
    ):
        with pytest.raises(grpc.RpcError) as info:
            bob.stub.CreatePayment(
                pb.CreatePaymentRequest(
                    idempotency_key=uuid.uuid4().hex,
                    payee_username=alice.username,
                    amount=1_00,
                    currency="USD",
                ),
                metadata=metadata,
                timeout=RPC_TIMEOUT_S,
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert bob.bank_account().balance == 40_00
    # Logging out revokes only one's own token.
    alice.stub.Logout(pb.LogoutRequest(), metadata=alice.metadata, timeout=RPC_TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as info:
        alice.balance()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert bob.balance().balance == 40_00
