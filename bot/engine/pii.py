"""Personal data in text: e-mail addresses, phone numbers, payment card numbers (Luhn) and IBANs (mod 97)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import regex

PiiKind = Literal["email", "phone", "card", "iban"]

# A pattern's time per text: the text is a pull request's, so a pathological input must not hold the worker.
PII_TIMEOUT_S = 0.5

_EMAIL = regex.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
# 13-19 digits, optionally grouped by single spaces or hyphens (as cards are printed), starting as
# the card networks' numbers do (2-6): a 13-digit millisecond timestamp starts with 1.
_CARD = regex.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d-])")
# Country code, check digits, then 11-30 letters and digits, optionally in groups of four.
_IBAN = regex.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# An international number (+ and 8-15 digits) or a North American one ((555) 123-4567, 555-123-4567).
_PHONE = regex.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\w)"
)


@dataclass(frozen=True)
class PiiMatch:
    kind: PiiKind
    start: int
    end: int
    value: str

    @property
    def masked(self) -> str:
        """The value with all but its last four characters hidden: reports must not repeat the data."""
        visible = self.value[-4:]
        return "•" * max(0, len(self.value) - 4) + visible


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (every payment card number does)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether an IBAN (spaces allowed) passes ISO 13616's mod-97 check."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def find_pii(text: str) -> list[PiiMatch]:
    """Every e-mail address, phone number, Luhn-valid card number and mod-97-valid IBAN in `text`,
    in order of position. A digit run that is a valid card is not also reported as a phone number.

    Raises:
        TimeoutError: when a pattern takes longer than PII_TIMEOUT_S on `text`.
    """
    found: list[PiiMatch] = []
    for m in _EMAIL.finditer(text, timeout=PII_TIMEOUT_S):
        found.append(PiiMatch("email", m.start(), m.end(), m.group()))
    for m in _IBAN.finditer(text, timeout=PII_TIMEOUT_S):
        if iban_valid(m.group()):
            found.append(PiiMatch("iban", m.start(), m.end(), m.group()))
    for m in _CARD.finditer(text, timeout=PII_TIMEOUT_S):
        digits = "".join(ch for ch in m.group() if ch.isdigit())
        if luhn_valid(digits) and not _inside(found, m.start()):
            found.append(PiiMatch("card", m.start(), m.end(), m.group()))
    for m in _PHONE.finditer(text, timeout=PII_TIMEOUT_S):
        if not _inside(found, m.start()):
            found.append(PiiMatch("phone", m.start(), m.end(), m.group()))
    return sorted(found, key=lambda p: p.start)


def _inside(found: list[PiiMatch], position: int) -> bool:
    return any(p.start <= position < p.end for p in found)
