"""The prefilter never skips a search that would have matched, and never changes a match.

Random patterns (word boundaries, anchors, classes, repeats, groups, lookarounds, nested
and top-level alternations) are searched in random texts over a small alphabet, with and
without the prefilter: the matches must be the same, span for span.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import textchecks
from flows.prefilter import prefilter, words_of

ATOMS = ["a", "b", "ab", "ba", "aab", "x", "_", " ", "-", r"\.", "é", "\u0301", "1", "Z", "\n",
         r"\b", r"\B", "^", "$", r"\A", r"\Z", r"\w", r"\W", r"\s", r"\d", ".", "[ab]",
         "[^a]", r"[\W_]", "[a-c]", "[-_ ]", "(?=a)", "(?!b)", "(?<=a)", "(?<! )", "(?i:a)",
         r"\1", r"(?(1)a|b)", r"\ue000", "[\ue000-\ue001]"]
REPEATS = ["", "", "", "?", "*", "+", "{2}", "{0,2}", "{1,3}", "*?", "+?", "?+", "*+"]


def _repeat(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(inner, st.sampled_from(REPEATS)).map(
        lambda p: f"(?:{p[0]}){p[1]}" if p[1] else p[0])


sequences = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.lists(_repeat(inner), min_size=1, max_size=4).map("".join),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(?:" + "|".join(xs) + ")"),
        inner.map(lambda x: f"({x})"),
        inner.map(lambda x: f"(?>{x})"),
    ),
    max_leaves=8,
)
patterns = st.lists(sequences, min_size=1, max_size=4).map("|".join)
texts = st.lists(st.sampled_from(["a", "b", "ab", "x", "Z", "_", " ", "-", ".", "é",
                                  "\u0301", "1", "\n", "aab", "ba", "\ue000"]),
                 max_size=12).map("".join)


def _compile(source: str, flags: int = 0) -> re.Pattern[str] | None:
    try:
        return re.compile(source, flags)
    except re.error:
        return None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=patterns, flags=st.sampled_from([0, 0, 0, re.MULTILINE, re.IGNORECASE,
                                                re.DOTALL]),
       samples=st.lists(texts, min_size=1, max_size=6), pos=st.integers(0, 3))
def test_prefiltered_search_is_the_search(source: str, flags: int, samples: list[str],
                                          pos: int) -> None:
    pattern = _compile(source, flags)
    if pattern is None:
        return
    gated = prefilter(pattern, common=["a"])
    for text in samples:
        expected = pattern.search(text, pos)
        found = gated.search(text, words_of(text), pos)
        assert (found and (found.span(), found.group())) == (
            expected and (expected.span(), expected.group())), (source, text)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(texts, st.text(), st.text(alphabet=st.characters(max_codepoint=127))))
def test_the_words_of_a_text_are_its_alphanumeric_runs(text: str) -> None:
    assert words_of(text) == frozenset(re.findall(r"[^\W_]+", text))


@pytest.mark.parametrize(("source", "words", "fragments"), [
    (r"\b(?:ignore|forget)[\W_]+(?:all[\W_]+)?rules\b", {"rules"}, set()),
    (r"\bsystem\s*:", {"system"}, set()),
    (r"<\|\s*im_start", set(), {"<|"}),
    (r"批准|\bapprove\b", {"approve"}, {"批准"}),
    (r"zatwierdz\w*", set(), {"zatwierdz"}),
])
def test_what_a_pattern_needs(source: str, words: set[str], fragments: set[str]) -> None:
    gate = prefilter(re.compile(source)).whole
    assert gate.words == words and gate.fragments == fragments


@pytest.mark.parametrize("source", [r"\w+", r"a|\w", r"(?i:rules)", r"(?i)rules"])
def test_what_it_cannot_read_it_always_searches(source: str) -> None:
    gated = prefilter(re.compile(source))
    assert gated.whole.words is None
    assert gated.search("zzz", words_of("zzz")) is not None or re.search(source, "zzz") is None


def test_a_private_use_character_in_a_pattern_is_matched_as_itself() -> None:
    for source in [r"a\ue000b", "a\ue000b", r"a[\ue000]b", r"\ba[\ue000-\ue0ff]b\b"]:
        gated = prefilter(re.compile(source))
        assert gated.search("a\ue000b", words_of("a\ue000b")) is not None, source


def test_back_references_keep_an_alternation_whole() -> None:
    gated = prefilter(re.compile(r"(a)|(b)\1"))
    assert gated.alternatives == ()
    assert gated.search("bb", words_of("bb")) is None  # \1 is (a), which took no part


def test_patterns_flagged_ignorecase_are_always_searched() -> None:
    gated = prefilter(re.compile(r"\brules\b", re.IGNORECASE))
    assert gated.whole.words is None
    assert gated.search("RULES", words_of("RULES")) is not None


def test_alternation_is_cut_at_its_top_level_only() -> None:
    gated = prefilter(re.compile(r"a(?:b|c)|[|]d|\|e|(?#x|y)f"))
    assert [g.pattern.pattern for g in gated.alternatives] == [
        "a(?:b|c)", "[|]d", r"\|e", "(?#x|y)f"]


def test_the_injection_patterns_need_words_an_ordinary_purpose_lacks() -> None:
    gates = textchecks._gates()
    text = textchecks.fold("Laptops for the new hires of team 7")
    for gate in (gates.strong, gates.vocative, gates.verdict, gates.skip, gates.instruct):
        assert gate.whole.words is not None
        assert not gate.whole.admits(text, words_of(text))
