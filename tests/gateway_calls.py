"""Raw calls of GatewayService for tests, with synchronous stubs: register, log in, read the
balance, and the RpcError a call must raise. Each returns the raw response."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import link_code_of
from users import PASSWORD

RPC_TIMEOUT_S = 10.0


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def register(
    stub: pbg.GatewayServiceStub, username: str, account: str,
    password: str = PASSWORD, bank_id: str = "bank-a", link_code: str | None = None,
) -> pb.RegisterResponse:
    request = pb.RegisterRequest(
        username=username, password=password, bank_id=bank_id, account_number=account,
        link_code=link_code_of(account) if link_code is None else link_code,
    )
    return stub.Register(request, timeout=RPC_TIMEOUT_S)


def login(stub: pbg.GatewayServiceStub, username: str, password: str = PASSWORD) -> str:
    request = pb.LoginRequest(username=username, password=password)
    return str(stub.Login(request, timeout=RPC_TIMEOUT_S).access_token)


def balance(stub: pbg.GatewayServiceStub, token: str) -> pb.GetBalanceResponse:
    return stub.GetBalance(pb.GetBalanceRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S)


def failure(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError that call(*args, **kwargs) must raise."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value
