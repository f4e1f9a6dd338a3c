"""Block Kit blocks as plain dicts: the few kinds the bot's messages use, built directly.

Each constructor returns exactly what :mod:`slack_sdk.models` renders for the same input
(``SectionBlock(...).to_dict()`` and so on: the same keys, in the same sorted order), at a
small fraction of the cost; ``tests/test_cards.py`` parses every block the builders produce
back through ``slack_sdk.models.blocks.Block`` to keep it that way.

No validation runs here. Instead every text is clipped to Slack's limit for its place
(:func:`bot.text.clip`, which never cuts an entity or a ``<...>`` sequence in half), so no
text goes over its limit; the callers escape untrusted text before it gets here, and keep
the number of fields (10), context elements (10) and buttons (25) within Slack's limits.
"""

from __future__ import annotations

from typing import Any, Literal

from bot.text import clip

# Slack's limits, in characters (https://api.slack.com/reference/block-kit/blocks).
SECTION_TEXT = 3000
FIELD_TEXT = 2000
CONTEXT_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75

Block = dict[str, Any]
TextObject = dict[str, Any]
Style = Literal["primary", "danger"]


def plain_text(text: str) -> TextObject:
    """A ``plain_text`` object, as slack_sdk renders a string given for one (emoji on)."""
    return {"emoji": True, "text": text, "type": "plain_text"}


def mrkdwn(text: str) -> TextObject:
    """A ``mrkdwn`` text object; ``text`` must already be escaped and clipped."""
    return {"text": text, "type": "mrkdwn"}


def header(text: str) -> Block:
    return {"text": plain_text(clip(text, HEADER_TEXT)), "type": "header"}


def section(text: str, fields: list[str] | None = None) -> Block:
    """A section of mrkdwn ``text``, with ``fields`` (at most 10) shown in two columns."""
    block: Block = {"text": mrkdwn(clip(text, SECTION_TEXT)), "type": "section"}
    if fields:
        return {"fields": [mrkdwn(clip(f, FIELD_TEXT)) for f in fields], **block}
    return block


def context(text: str) -> Block:
    """A context block (small grey text) of one mrkdwn element."""
    return {"elements": [mrkdwn(clip(text, CONTEXT_TEXT))], "type": "context"}


def button(text: str, action_id: str, value: str | None = None,
           style: Style | None = None) -> Block:
    out: Block = {"action_id": action_id}
    if style is not None:
        out["style"] = style
    out["text"] = plain_text(clip(text, BUTTON_TEXT))
    out["type"] = "button"
    if value is not None:
        out["value"] = value
    return out


def actions(*buttons: Block) -> Block:
    return {"elements": list(buttons), "type": "actions"}


def divider() -> Block:
    return {"type": "divider"}


__all__ = [
    "BUTTON_TEXT",
    "CONTEXT_TEXT",
    "FIELD_TEXT",
    "HEADER_TEXT",
    "SECTION_TEXT",
    "Block",
    "TextObject",
    "actions",
    "button",
    "context",
    "divider",
    "header",
    "mrkdwn",
    "plain_text",
    "section",
]
