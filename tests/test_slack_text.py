"""``bot.text`` (escaping and clipping for mrkdwn) and ``bot.ids`` (typed Slack values)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.ids import RejectMetadata, RequestModalMetadata, StepValue
from bot.text import ELLIPSIS, clip, duration_words, escape, quote, safe, user, users, when

# --------------------------------------------------------------------------- escape / clip


@pytest.mark.parametrize(("raw", "escaped"), [
    ("<!channel>", "&lt;!channel&gt;"),
    ("<!here> <!everyone>", "&lt;!here&gt; &lt;!everyone&gt;"),
    ("<@U123>", "&lt;@U123&gt;"),
    ("<https://evil.example|your bank>", "&lt;https://evil.example|your bank&gt;"),
    ("R&D", "R&amp;D"),
    ("&lt;", "&amp;lt;"),
    ("plain *bold* _it_", "plain *bold* _it_"),
])
def test_escape_neutralises_control_sequences(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


def test_clip_keeps_short_text_and_marks_a_cut() -> None:
    assert clip("hello", 5) == "hello"
    assert clip("hello world", 8) == "hello w" + ELLIPSIS
    assert clip("hello world", 7) == "hello" + ELLIPSIS  # no space before the ellipsis
    assert len(clip("x" * 5000, 3000)) == 3000


def test_clip_never_cuts_an_entity_in_half() -> None:
    text = escape("aaaaaaaaaa<!channel>")  # aaaaaaaaaa&lt;!channel&gt;
    for limit in range(1, len(text)):
        cut = clip(text, limit)
        assert len(cut) <= limit
        assert not re.search(r"&[a-z]{0,3}(?:…|$)", cut), cut


def test_clip_never_cuts_a_mention_or_date_in_half() -> None:
    text = f"waiting for {user('U_FINANCE_1')} since {when(datetime(2026, 1, 2, tzinfo=UTC))}"
    for limit in range(1, len(text)):
        cut = clip(text, limit)
        assert cut.count("<") == cut.count(">"), cut


def test_clip_refuses_a_silly_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        clip("abc", 0)


@given(st.text(alphabet=st.sampled_from("ab &<>;\n"), max_size=200),
       st.integers(min_value=1, max_value=120))
def test_safe_text_fits_and_holds_no_control_sequence(raw: str, limit: int) -> None:
    out = safe(raw, limit)
    assert len(out) <= limit
    assert "<" not in out and ">" not in out
    body = out.removesuffix(ELLIPSIS)
    # every & still starts a whole entity
    assert all(body[i:].startswith(("&amp;", "&lt;", "&gt;")) for i, ch in enumerate(body)
               if ch == "&")


def test_mentions_are_defensive() -> None:
    assert user("U024BE7LH") == "<@U024BE7LH>"
    assert user("U_ALICE") == "<@U_ALICE>"
    assert user("U1|<!channel>") == "<@U1&lt;!channel&gt;>"
    assert users(["U1"]) == "<@U1>"
    assert users(["U1", "U2", "U3"]) == "<@U1>, <@U2> or <@U3>"
    assert users([]) == ""


def test_quote_quotes_every_line() -> None:
    assert quote("one\ntwo") == ">one\n>two"
    assert quote("") == ">"


def test_when_shows_local_time_with_a_utc_fallback() -> None:
    text = when(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    assert text.startswith("<!date^1795597200^") and text.endswith("|2026-11-25 09:00 UTC>")


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 seconds"), (1, "1 second"), (90, "1 minute 30 seconds"), (3600, "1 hour"),
    (4 * 3600, "4 hours"), (4 * 3600 + 1800, "4 hours 30 minutes"), (86400, "1 day"),
    (2 * 86400, "2 days"), (86400 + 6 * 3600, "1 day 6 hours"),
])
def test_duration_words(seconds: int, words: str) -> None:
    assert duration_words(seconds) == words


# --------------------------------------------------------------------------- typed values


def test_step_value_is_compact_json_and_round_trips() -> None:
    value = StepValue(request_id=42, step=1)
    assert value.encode() == '{"r":42,"s":1}'
    assert StepValue.parse(value.encode()) == value


@pytest.mark.parametrize("raw", [
    None, "", "x", "42", "[]", "null", '{"r":42}', '{"r":"42","s":1}', '{"r":true,"s":1}',
    '{"r":42.0,"s":1}', '{"r":0,"s":1}', '{"r":-1,"s":1}', '{"r":42,"s":-1}',
    '{"r":42,"s":1,"x":1}', '{"r":1e400,"s":1}', '{"r":99999999999999999999,"s":1}',
    '{"r":42,"s":1' , "{" * 5000, 42, ["r"],
])
def test_malformed_step_values_parse_to_none(raw: object) -> None:
    assert StepValue.parse(raw) is None


def test_reject_metadata_carries_the_card_and_response_url() -> None:
    meta = RejectMetadata(request_id=7, step=2, channel="D_U_FIN1", ts="1700000000.000100",
                          response_url="https://hooks.slack.com/actions/T1/1/abc")
    parsed = RejectMetadata.parse(meta.encode())
    assert parsed == meta
    assert parsed is not None and parsed.step_value == StepValue(request_id=7, step=2)
    assert RejectMetadata.parse(RejectMetadata(request_id=7, step=0).encode()) is not None
    assert RejectMetadata.parse('{"r":7}') is None
    assert RejectMetadata.parse("not json") is None


def test_request_modal_metadata_is_optional_everywhere() -> None:
    assert RequestModalMetadata.parse("{}") == RequestModalMetadata()
    meta = RequestModalMetadata(channel="C1", response_url="https://hooks.slack.com/x")
    assert RequestModalMetadata.parse(meta.encode()) == meta
