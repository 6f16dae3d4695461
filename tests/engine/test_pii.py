"""Personal data patterns: each kind found, and the checksums that tell real numbers from look-alikes."""

from __future__ import annotations

import pytest

from bot.engine.pii import find_pii, iban_valid, luhn_valid


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("79927398710", False)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [("GB82 WEST 1234 5698 7654 32", True), ("GB82WEST12345698765433", False), ("DE89370400440532013000", True)],
)
def test_iban_mod_97(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid


def test_a_luhn_valid_card_is_found_and_an_invalid_one_is_not() -> None:
    found = find_pii("pay with 4111 1111 1111 1111 or 4111 1111 1111 1112")
    assert [(p.kind, p.value) for p in found] == [("card", "4111 1111 1111 1111")]
    assert found[0].masked == "•" * 15 + "1111"


def test_each_kind_with_its_position() -> None:
    text = "mail ana@example.com, call +44 20 7946 0958, IBAN GB82 WEST 1234 5698 7654 32, id 12345"
    found = find_pii(text)
    assert [(p.kind, text[p.start : p.end]) for p in found] == [
        ("email", "ana@example.com"),
        ("phone", "+44 20 7946 0958"),
        ("iban", "GB82 WEST 1234 5698 7654 32"),
    ]


def test_an_invalid_iban_and_plain_numbers_are_not_personal_data() -> None:
    assert find_pii("GB82WEST12345698765433, booking 123456, 2026-12-07, version 1.2.3") == []
    # A Luhn-valid millisecond timestamp is not a card: card numbers start with 2-6.
    assert luhn_valid("1733550000009") and find_pii("at 1733550000009") == []


def test_a_north_american_number() -> None:
    assert [p.value for p in find_pii("call (555) 123-4567 today")] == ["(555) 123-4567"]
