"""Personal data scrubbed from the text: e-mail addresses, phone numbers and ID-like numbers.

Each match is replaced by a placeholder and counted by kind. The patterns aim at few false alarms on
ordinary text (years, verse numbers, prices stay):
- `<EMAIL>`: name@domain.tld;
- `<ID>`: a Chinese resident ID (17 digits and a check digit or X), a US social security number
  (ddd-dd-dddd), or a payment-card number (13 to 19 digits, spaces or dashes between groups allowed) that
  passes the Luhn check;
- `<PHONE>`: a Chinese mobile number (1[3-9] and 9 more digits), or a number in international or North
  American form, such as +44 20 7946 0958, (555) 123-4567 or 555-123-4567.
"""

from __future__ import annotations

import re
from collections import Counter

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CN_ID = re.compile(
    r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\d)"
)
SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
CN_MOBILE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d{9}(?!\d)")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\d)"
)


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def scrub(text: str) -> tuple[str, Counter]:
    """`text` with personal data replaced by placeholders, and how many of each kind were replaced."""
    counts: Counter = Counter()

    def replace(pattern: re.Pattern, placeholder: str, text: str, check=None) -> str:
        def sub(match: re.Match) -> str:
            if check and not check(match.group()):
                return match.group()
            counts[placeholder] += 1
            return placeholder

        return pattern.sub(sub, text)

    text = replace(EMAIL, "<EMAIL>", text)
    text = replace(CN_ID, "<ID>", text)
    text = replace(SSN, "<ID>", text)
    text = replace(CARD, "<ID>", text, _luhn)
    text = replace(CN_MOBILE, "<PHONE>", text)
    text = replace(PHONE, "<PHONE>", text)
    return text, counts
