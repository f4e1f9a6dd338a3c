"""Slack messages and views as readable terminal text (for ``approvals demo``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_MENTION = re.compile(r"<@([^>|]+)(?:\|[^>]*)?>")
_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")


def plain(text: str, names: Mapping[str, str]) -> str:
    """mrkdwn as a person reads it: mentions by name, dates as text, entities decoded."""
    text = _MENTION.sub(lambda m: "@" + names.get(m.group(1), m.group(1)), text)
    text = _DATE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text(obj: Any, names: Mapping[str, str]) -> str:
    if isinstance(obj, dict):
        return plain(str(obj.get("text", "")), names)
    return plain(str(obj or ""), names)


def blocks_text(blocks: list[dict[str, Any]], names: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append(f"== {_text(block.get('text'), names)} ==")
        elif kind == "section":
            if block.get("text"):
                lines.extend(_text(block["text"], names).splitlines())
            fields = [_text(f, names).replace("\n", ": ", 1) for f in block.get("fields") or []]
            lines.extend(f"  {field}" for field in fields)
        elif kind == "context":
            lines.extend(_text(e, names) for e in block.get("elements") or [])
        elif kind == "actions":
            buttons = [f"[ {_text(e.get('text'), names)} ]" for e in block.get("elements") or []
                       if e.get("type") == "button"]
            if buttons:
                lines.append("  ".join(buttons))
        elif kind == "divider":
            lines.append("-" * 40)
        elif kind == "input":
            label = _text(block.get("label"), names)
            optional = " (optional)" if block.get("optional") else ""
            lines.append(f"  {label}{optional}: ____")
    return lines


def message_text(message: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    blocks = message.get("blocks")
    if blocks:
        return blocks_text(list(blocks), names)
    return plain(str(message.get("text", "")), names).splitlines()


def view_text(view: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    title = _text(view.get("title"), names)
    lines = [f"[{title}]"] if title else []
    lines += blocks_text(list(view.get("blocks") or []), names)
    submit = view.get("submit")
    if submit:
        lines.append(f"[ {_text(submit, names)} ]")
    return lines
