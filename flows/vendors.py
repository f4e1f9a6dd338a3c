"""Vendor names compared the way people mean them: ``ACME, Inc.`` is ``Acme``."""

from __future__ import annotations

import re
import unicodedata

_SUFFIXES = frozenset({
    "inc", "incorporated", "ltd", "limited", "llc", "llp", "lp", "plc", "corp",
    "corporation", "co", "company", "gmbh", "ag", "kg", "sa", "sas", "sarl", "srl", "spa",
    "bv", "nv", "oy", "ab", "as", "aps", "pty", "pte", "kk", "sl", "sro", "ou",
})


def vendor_key(name: str | None) -> str | None:
    """Case, accents, punctuation, spacing and company suffixes folded; ``None`` if empty."""
    if name is None:
        return None
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("&", " and ")
    words = re.sub(r"[^\w]+", " ", text).split()
    # "G.m.b.H." became "g m b h": glue single letters back together before matching
    glued: list[str] = []
    initials = False  # is glued[-1] built from single letters only?
    for word in words:
        if len(word) == 1 and initials:
            glued[-1] += word
        else:
            glued.append(word)
            initials = len(word) == 1
    while len(glued) > 1 and glued[-1] in _SUFFIXES:
        glued.pop()
    key = "".join(glued)
    return key or None
