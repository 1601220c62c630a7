"""`paygate pay-batch` reading its CSV file (client/cli_batch.py): columns, the optional
header, blank lines, keys made from the file, and a file with a bad line paying nothing."""

from __future__ import annotations

import hashlib

import pytest
from paygate.client.cli_batch import derived_key, read_lines
from paygate.client.cli_errors import CliError
from paygate.errors import InvalidArgument

FILE = b"""payee,amount,description,idempotency_key
bob,12.50,invoice 1041,
carol,7,"refund, order 77",order-77

dave,0.01
"""


def test_lines_become_items_with_their_numbers_and_keys() -> None:
    lines = read_lines(FILE, "USD")
    digest = hashlib.sha256(FILE).hexdigest()
    assert [(line.number, line.item.payee_username, line.item.amount_minor) for line in lines] == [
        (2, "bob", 12_50), (3, "carol", 7_00), (5, "dave", 1),
    ]  # fmt: skip
    assert [line.item.description for line in lines] == ["invoice 1041", "refund, order 77", ""]
    assert [line.item.idempotency_key for line in lines] == [
        derived_key(digest, 2), "order-77", derived_key(digest, 5),
    ]  # fmt: skip
    assert {line.item.currency for line in lines} == {"USD"}
    # The same bytes make the same keys; any change to the file makes others.
    assert read_lines(FILE, "USD") == lines
    edited = read_lines(FILE.replace(b"0.01", b"0.02"), "USD")
    assert edited[0].item.idempotency_key != lines[0].item.idempotency_key
    assert edited[1].item.idempotency_key == "order-77"


def test_without_a_header_the_first_line_is_a_payment() -> None:
    lines = read_lines(b"bob,1.00\r\ncarol,2.00\r\n", "USD")
    assert [(line.number, line.item.payee_username) for line in lines] == [(1, "bob"), (2, "carol")]
    assert [line.item.amount_minor for line in read_lines(b"bob,1000\n", "JPY")] == [1000]


def test_a_file_with_bad_lines_names_each_and_pays_nothing() -> None:
    text = b"bob,12.505\n,1.00\ncarol\nbob,0\ndave,1.00,x,k,extra\nerin,-3\nfred,2,,k1\ngus,3,,k1\n"
    with pytest.raises(CliError) as info:
        read_lines(text, "USD")
    message = str(info.value)
    assert message.startswith("nothing was paid: fix these lines")
    for number in (1, 2, 3, 4, 5, 6, 8):
        assert f"line {number}:" in message, message
    assert "line 7:" not in message
    assert "more than 2 digits" in message and "line 1's too" not in message
    assert "'k1' is line 7's too" in message


def test_empty_unreadable_and_unknown_currency_files_are_refused() -> None:
    with pytest.raises(CliError, match="no payment"):
        read_lines(b"payee,amount\n\n", "USD")
    with pytest.raises(CliError, match="not UTF-8"):
        read_lines(b"bob,1.00,\xff\n", "USD")
    with pytest.raises(InvalidArgument, match="unknown currency"):
        read_lines(b"bob,1.00\n", "XXX")
