"""The request that comes in bursts, answered without Bolt's dispatch: ``/purchase`` with
an amount, which creates a request at once.

A burst of them is the bot's heaviest load, and on a server that shares its cores with the
workers creating the requests, every microsecond per acknowledgement is taken from them.
Bolt's dispatch -- its request object, a middleware chain, matching every listener,
building the listener's arguments, its response object -- costs about 80 µs of CPU per
command here, a sixth of the server's whole acknowledgement; checking the signature and
reading the form costs about 25.

:class:`InlinePurchase` therefore answers that one command itself, and only when it is
exactly that: a form body for ``/purchase`` whose signature and timestamp slack_sdk's
:class:`~slack_sdk.signature.SignatureVerifier` accepts (the check Bolt's own middleware
runs: the signing secret's HMAC, and a timestamp within five minutes), whose text parses
as an amount and a purpose. Its answer comes from the function the Bolt listener uses
(:func:`bot.app.create_request`), and goes out as Bolt sends it. Anything else -- a bad or
old signature (Bolt answers 401), an ``ssl_check``, help, status, a typo to explain, the
form -- steps aside to Bolt, untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_plus

from slack_sdk.signature import SignatureVerifier

from bot.app import bounded, create_request
from bot.commands import CreateRequest, parse_command
from bot.ids import SLASH_COMMAND
from bot.runtime import Runtime
from flows.errors import RequestInvalid

_MARK = b"command=%2Fpurchase"  # how the command's name arrives in the form
_FIELDS = frozenset({"command", "text", "user_id", "ssl_check"})


def form_fields(body: str) -> dict[str, list[str]]:
    """The fields of a form body this path reads, as ``urllib.parse.parse_qs(body,
    keep_blank_values=True, strict_parsing=True)`` has them (a ``ValueError`` where it
    raises one), without decoding the dozen others a slash command carries (half the
    cost of the whole parse)."""
    out: dict[str, list[str]] = {}
    for pair in body.split("&") if body else ():
        key, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"bad query field: {pair!r}")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if key in _FIELDS:
            out.setdefault(key, []).append(unquote_plus(value))
    return out


class InlinePurchase:
    """``await fast(body, headers)``: the answer's text, or ``None`` for Bolt to handle."""

    def __init__(self, runtime: Runtime, *, signing_secret: str) -> None:
        self.runtime = runtime
        self._verifier = SignatureVerifier(signing_secret)

    async def __call__(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        if _MARK not in body:
            return None
        timestamp = headers.get("X-Slack-Request-Timestamp")
        signature = headers.get("X-Slack-Signature")
        if not timestamp or not signature or not self._verifier.is_valid(
                body=body, timestamp=timestamp, signature=signature):
            return None  # Bolt refuses it, as it refuses any request
        try:
            form = form_fields(body.decode())
        except (UnicodeDecodeError, ValueError):
            return None
        if form.get("command") != [SLASH_COMMAND] or "ssl_check" in form:
            return None
        users, texts = form.get("user_id", []), form.get("text", [""])
        if len(users) != 1 or len(texts) != 1:
            return None
        try:
            parsed = parse_command(texts[0], currencies=self.runtime.policy.accepted_currencies)
        except RequestInvalid:
            return None  # explained by the listener, with the help text
        if not isinstance(parsed, CreateRequest):
            return None
        answer = await bounded(create_request(self.runtime, parsed, users[0]))
        self.runtime.wake("work")
        return answer
