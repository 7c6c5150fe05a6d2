"""E-mail address syntax check for user accounts (no DNS look-up: the platform may run offline).

Why it matters beyond typos: the address goes into an SMTP `To:` header of the notification mails, so a value
with a line break or several addresses could inject headers or mail a third party. The rules are the practical
subset of RFC 5321/5322 every mail provider accepts: one `@`, an unquoted local part of at most 64 characters,
a domain of dot-separated labels (international names allowed, checked in their IDNA form) with at least one
dot, at most 254 characters in all.
"""

from __future__ import annotations

import re

_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s])+"  # RFC 5322 atext, plus non-ASCII letters (RFC 6531)
LOCAL_RE = re.compile(rf"^{_ATOM}(\.{_ATOM})*$")
LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
TLD_RE = re.compile(r"^([A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$")


def check_email(value: str) -> str:
    """`value` stripped, with the domain lower-cased; ValueError saying what is wrong otherwise."""
    address = value.strip()
    expected = "expected an address like name@example.com"
    if len(address) > 254:
        raise ValueError(f"an e-mail address has at most 254 characters; {expected}")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{address!r} is not an e-mail address: {expected}")
    if len(local) > 64 or not LOCAL_RE.match(local):
        raise ValueError(
            f"the part before '@' in {address!r} has a character or dot that is not allowed "
            f"(no spaces, quotes, commas, '@' or line breaks); {expected}"
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"the domain of {address!r} is not a valid host name; {expected}") from exc
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(LABEL_RE.match(label) for label in labels) or not TLD_RE.match(labels[-1]):
        raise ValueError(f"the domain of {address!r} is not a valid host name with a top-level domain; {expected}")
    return f"{local}@{domain.lower()}"
