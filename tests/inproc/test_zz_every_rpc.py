"""After the tier's other modules: every RPC of GatewayService, AdminService and BankService
was answered at least once and refused at least once by the servers of this tier.

The methods come from the generated service descriptors, so a new RPC without an
in-process test fails here. What the servers answered comes from their own gRPC server
metrics, read as each module's servers stop (tests/inproc/servers.py, ANSWERED). The file
name sorts last in tests/inproc, so this runs after the modules it checks; when only part
of the tier runs (a file, -k, --lf), there is nothing whole to check, and it is skipped.
"""

from __future__ import annotations

import pathlib

import grpc
import pytest
import servers as tier
from paygate.errors import STATUS_BY_ERROR
from paygate.gen.paygate.bank.v1 import bank_pb2
from paygate.gen.paygate.v1 import admin_pb2, gateway_pb2

SERVICES = [
    gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    bank_pb2.DESCRIPTOR.services_by_name["BankService"],
]
# A refusal is a deliberate answer of the service: bad input, not found, not allowed, not
# now. UNAVAILABLE, UNKNOWN, INTERNAL or a deadline would be a server failing, not refusing.
REFUSALS = {code.name for code in STATUS_BY_ERROR.values()} - {grpc.StatusCode.UNAVAILABLE.name}
TIER = pathlib.Path(__file__).parent


def tier_modules() -> set[pathlib.Path]:
    return {path for path in TIER.glob("test_*.py") if path.name != pathlib.Path(__file__).name}


def test_every_rpc_was_answered_and_refused_in_the_tier(request: pytest.FixtureRequest) -> None:
    ran = {item.path for item in request.session.items}
    missing_modules = sorted(p.name for p in tier_modules() - ran)
    if missing_modules:
        pytest.skip(f"only part of tests/inproc ran (not {', '.join(missing_modules)})")
    if tier.PARTIAL_RUN:
        pytest.skip("only part of tests/inproc ran (some of its tests were deselected)")
    missing = []
    for service in SERVICES:
        for method in service.methods:
            rpc = (service.full_name, method.name)
            codes = {code for s, m, code in tier.ANSWERED if (s, m) == rpc}
            if "OK" not in codes:
                missing.append(f"{service.name}.{method.name}: never answered OK")
            if not codes & REFUSALS:
                missing.append(f"{service.name}.{method.name}: never refused ({sorted(codes)})")
    assert missing == [], "give these RPCs an in-process test:\n" + "\n".join(missing)


def test_the_check_sees_every_method_of_the_protos() -> None:
    """The descriptors the check reads are the generated code of every service."""
    names = {f"{s.name}.{m.name}" for s in SERVICES for m in s.methods}
    assert {
        "GatewayService.CreatePayment",
        "AdminService.FreezeUser",
        "BankService.AbortBatch",
    } <= names
    protos = pathlib.Path(__file__).resolve().parents[2] / "proto" / "paygate"
    declared = sum(
        text.count("\n  rpc ")
        for text in (
            (protos / "v1" / "gateway.proto").read_text(),
            (protos / "v1" / "admin.proto").read_text(),
            (protos / "bank" / "v1" / "bank.proto").read_text(),
        )
    )
    assert len(names) == declared
