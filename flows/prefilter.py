"""Cheap necessary conditions for a regular expression to match: skip searches that cannot.

A big alternation anchored on word boundaries (``\\b(?:ignore|disregard|...)``) gives
Python's regex engine no literal prefix to scan for, so a search tries every alternative at
every position of the text, though most texts hold none of the words a match could start
with. :func:`prefilter` reads a compiled pattern's parse tree once and finds *words* and
*fragments*, at least one of which every match must contain:

* a word is a whole alphanumeric run of the text (``[^\\W_]+``: what lies between spaces,
  punctuation and underscores), such as ``instructions`` in ``\\b...[\\W_]+instructions\\b``;
* a fragment is a plain substring, for what has no word boundary around it (``<|``, ``批准``).

:meth:`Prefilter.search` looks them up in the text's words (:func:`words_of`, computed once
per text and shared by every pattern) and runs a search only where one is there. A pattern
that is an alternation ``A|B|C`` is also kept as its alternatives, each with what it needs:
when the text admits some, only those are searched, and of their matches the leftmost wins,
the earliest alternative among equals -- which is the match ``pattern.search`` finds. So
the result is ``pattern.search``'s, always. Whatever the analysis does not understand
(scoped flags, back references, ``ASCII``/``IGNORECASE``/``LOCALE``/``VERBOSE`` patterns, a
parser it does not know) makes it require nothing: that search then simply runs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, product
from typing import Any

try:  # the regex parser is private to the re package; without it nothing is skipped
    _PARSER: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - every CPython from 3.11 has it
    _PARSER = None

# A zero-width assertion that closes an adjacent word run (``\b``, ``^``, ``$``, ``\A``,
# ``\Z``): a private-use character standing for it inside the strings of a language.
_MARK = "\ue000"
_CLOSING_AT = frozenset({"AT_BOUNDARY", "AT_BEGINNING", "AT_BEGINNING_STRING",
                         "AT_BEGINNING_LINE", "AT_END", "AT_END_STRING", "AT_END_LINE",
                         "AT_UNI_BOUNDARY"})
# Character categories whose every member is not alphanumeric.
_CLOSING_CATEGORIES = frozenset({"CATEGORY_NOT_WORD", "CATEGORY_UNI_NOT_WORD",
                                 "CATEGORY_SPACE", "CATEGORY_UNI_SPACE",
                                 "CATEGORY_LINEBREAK", "CATEGORY_UNI_LINEBREAK"})
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_CAP = 256  # the most strings a finite language is spelled out with
_MAX_RANGE = 4096  # the widest character range inspected one character at a time
_UNSUPPORTED_FLAGS = re.ASCII | re.IGNORECASE | re.LOCALE | re.VERBOSE
_WORD = re.compile(r"[^\W_]+")


def words_of(text: str) -> frozenset[str]:
    """The text's alphanumeric runs: what :meth:`Prefilter.search` looks words up in."""
    if text.isascii():  # the same runs, found quicker
        return frozenset(text.translate(_ASCII_SEPARATORS).split())
    return frozenset(_WORD.findall(text))


_ASCII_SEPARATORS = {c: " " for c in range(128) if not chr(c).isalnum()}


@dataclass(frozen=True, slots=True)
class Gate:
    """A pattern and the words and fragments one of which its every match contains
    (``words`` is ``None`` when nothing is known: the pattern may match anything)."""

    pattern: re.Pattern[str]
    words: frozenset[str] | None
    fragments: frozenset[str]
    fragment_re: re.Pattern[str] | None

    @classmethod
    def of(cls, pattern: re.Pattern[str], need: _Need | None) -> Gate:
        if need is None:
            return cls(pattern, None, frozenset(), None)
        fragment_re = (re.compile("|".join(re.escape(f) for f in sorted(need.fragments)))
                       if need.fragments else None)
        return cls(pattern, need.words, need.fragments, fragment_re)

    def admits(self, text: str, words: frozenset[str]) -> bool:
        """Whether the pattern may match ``text`` (whose :func:`words_of` is ``words``)."""
        if self.words is None or not self.words.isdisjoint(words):
            return True
        return self.fragment_re is not None and self.fragment_re.search(text) is not None


@dataclass(frozen=True, slots=True)
class Prefilter:
    """A pattern's :class:`Gate`, and one per top-level alternative when there are several."""

    whole: Gate
    alternatives: tuple[Gate, ...]

    @property
    def pattern(self) -> re.Pattern[str]:
        return self.whole.pattern

    def search(self, text: str, words: frozenset[str], pos: int = 0) -> re.Match[str] | None:
        """``pattern.search(text, pos)``, without the searches that cannot match."""
        if not self.whole.admits(text, words):
            return None
        if not self.alternatives:
            return self.whole.pattern.search(text, pos)
        found: re.Match[str] | None = None
        for gate in self.alternatives:
            if gate.admits(text, words):
                match = gate.pattern.search(text, pos)
                if match is not None and (found is None or match.start() < found.start()):
                    found = match  # leftmost first, then the earliest alternative
        return found


def prefilter(pattern: re.Pattern[str], *, common: Iterable[str] = ()) -> Prefilter:
    """``pattern`` with what its matches contain; ``common`` words make poor evidence."""
    analysis = _Analysis(frozenset(common))
    parsed = _parse(pattern)
    if parsed is None:
        return Prefilter(Gate.of(pattern, None), ())
    whole = Gate.of(pattern, analysis.need(parsed, left=False, right=False))
    sources = _alternatives(pattern)
    if (sources is None or not _is_branch(parsed, len(sources))
            or (pattern.groups and _refers(parsed))):
        return Prefilter(whole, ())  # (a)|(b)\1 cut in two would make \1 mean (b)
    alternatives: list[Gate] = []
    for source, items in zip(sources, parsed[0][1][1], strict=True):
        try:
            alternative = re.compile(source, pattern.flags)
        except re.error:  # e.g. a back reference to a group of another alternative
            return Prefilter(whole, ())
        alternatives.append(Gate.of(alternative, analysis.need(list(items), left=False,
                                                               right=False)))
    return Prefilter(whole, tuple(alternatives))


def _parse(pattern: re.Pattern[str]) -> list[Item] | None:
    if _PARSER is None or pattern.flags & _UNSUPPORTED_FLAGS:
        return None
    try:
        return list(_PARSER.parse(pattern.pattern, pattern.flags))
    except Exception:  # pragma: no cover - a parser this module does not know
        return None


def _is_branch(items: list[Item], count: int) -> bool:
    """Whether the parse is one alternation of ``count`` alternatives."""
    return (len(items) == 1 and str(items[0][0]) == "BRANCH"
            and len(items[0][1][1]) == count)


def _refers(items: Iterable[Item]) -> bool:
    """Whether the parse holds a back reference or a conditional on a group."""
    for op, arg in items:
        if str(op) in {"GROUPREF", "GROUPREF_EXISTS"}:
            return True
        if any(_refers(sub) for sub in _subpatterns(arg)):
            return True
    return False


def _subpatterns(arg: object) -> list[list[Item]]:
    """The parsed sequences inside an opcode's argument, at any depth."""
    if hasattr(arg, "data"):  # a re._parser.SubPattern
        return [list(arg)]  # type: ignore[call-overload]
    if isinstance(arg, list | tuple):
        return [sub for part in arg for sub in _subpatterns(part)]
    return []


def _alternatives(pattern: re.Pattern[str]) -> list[str] | None:
    """The pattern's source cut at its top-level ``|``; ``None`` if there is none."""
    source = pattern.pattern
    cuts: list[int] = []
    depth, i, in_class = 0, 0, False
    while i < len(source):
        char = source[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            i += 1
            if source[i:i + 1] == "^":
                i += 1
            if source[i:i + 1] == "]":  # a "]" first in a set is one of its characters
                i += 1
            continue
        elif source.startswith("(?#", i):
            i = source.find(")", i)
            if i < 0:
                return None
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            cuts.append(i)
        i += 1
    if not cuts:
        return None
    bounds = [-1, *cuts, len(source)]
    return [source[a + 1:b] for a, b in pairwise(bounds)]


# --------------------------------------------------------------------------- the analysis


@dataclass(frozen=True, slots=True)
class _Need:
    """Every match contains one of ``words`` (as a whole run) or of ``fragments``."""

    words: frozenset[str]
    fragments: frozenset[str]

    def __or__(self, other: _Need) -> _Need:
        return _Need(self.words | other.words, self.fragments | other.fragments)


@dataclass(frozen=True, slots=True)
class _Info:
    """What a node can match, context-free.

    ``lang``: every string it can match (with ``_MARK`` for closing assertions), when
    there are few; ``empty``: it can match nothing; ``first``/``last``: every non-empty
    match starts/ends with a character that is not alphanumeric (or with ``_MARK``).
    """

    lang: frozenset[str] | None
    empty: bool
    first: bool
    last: bool


_UNKNOWN = _Info(None, True, False, False)
_ZERO = _Info(frozenset({""}), True, True, True)

Item = tuple[Any, Any]  # (opcode, argument) as re._parser gives them


def _closing(char: str) -> bool:
    return char == _MARK or not char.isalnum()


def _concat(left: frozenset[str] | None, right: frozenset[str] | None) -> frozenset[str] | None:
    if left is None or right is None or len(left) * len(right) > _CAP:
        return None
    return frozenset(a + b for a, b in product(left, right))


def _charset(items: Sequence[Item]) -> _Info:
    chars: set[str] | None = set()
    closing = True
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            char = chr(arg)
            closing = closing and _closing(char)
            chars = chars | {char} if chars is not None and char != _MARK else None
        elif name == "RANGE":
            low, high = arg
            span = [chr(c) for c in range(low, high + 1)] if high - low < _MAX_RANGE else None
            closing = closing and span is not None and all(_closing(c) for c in span)
            chars = (chars | set(span) if chars is not None and span is not None
                     and _MARK not in span else None)
        elif name == "CATEGORY":
            closing = closing and str(arg) in _CLOSING_CATEGORIES
            chars = None
        else:  # NEGATE, or anything new: no finite set, and it may hold letters
            return _Info(None, False, False, False)
    lang = frozenset(chars) if chars is not None and len(chars) <= _CAP else None
    return _Info(lang, False, closing, closing)


def _power(lang: frozenset[str] | None, low: int, high: int) -> frozenset[str] | None:
    if lang is None or high > 8:
        return None
    out: set[str] = set()
    level: frozenset[str] | None = frozenset({""})
    for count in range(high + 1):
        if level is None:
            return None
        if count >= low:
            out |= level
            if len(out) > _CAP:
                return None
        level = _concat(level, lang)
    return frozenset(out)


def _starts_closing(infos: Sequence[_Info], *, last: bool = False) -> bool:
    for info in infos:
        if not (info.last if last else info.first):
            return False
        if not info.empty:
            return True
    return True


@dataclass(slots=True)
class _Analysis:
    common: frozenset[str]
    infos: dict[int, _Info] = field(default_factory=dict)  # by id() of a parse's item

    def info(self, item: Item) -> _Info:
        """What ``item`` can match, context-free (worked out once per item of a parse)."""
        known = self.infos.get(id(item))
        if known is None:
            known = self.infos[id(item)] = self._info(item)
        return known

    def _info(self, item: Item) -> _Info:
        op, arg = item
        name = str(op)
        if name == "LITERAL":
            char = chr(arg)
            if char == _MARK:  # a real U+E000 in the text: not to be taken for the marker
                return _Info(None, False, True, True)
            return _Info(frozenset({char}), False, _closing(char), _closing(char))
        if name == "IN":
            return _charset(arg)
        if name in {"ANY", "NOT_LITERAL"}:
            return _Info(None, False, False, False)
        if name == "AT":
            return _Info(frozenset({_MARK}), False, True, True) if str(arg) in _CLOSING_AT \
                else _ZERO
        if name in {"ASSERT", "ASSERT_NOT"}:
            return _ZERO  # zero-width and neutral: the characters around it decide
        if name == "SUBPATTERN":
            _group, add_flags, del_flags, sub = arg
            return _UNKNOWN if add_flags or del_flags else self.seq_info(list(sub))
        if name == "ATOMIC_GROUP":
            return self.seq_info(list(arg))
        if name == "BRANCH":
            alts = [self.seq_info(list(alt)) for alt in arg[1]]
            langs = [a.lang for a in alts]
            lang: frozenset[str] | None = None
            if all(x is not None for x in langs):
                union = frozenset().union(*(x for x in langs if x is not None))
                lang = union if len(union) <= _CAP else None
            return _Info(lang, any(a.empty for a in alts), all(a.first for a in alts),
                         all(a.last for a in alts))
        if name in _REPEATS:
            low, high, sub = arg
            inner = self.seq_info(list(sub))
            return _Info(_power(inner.lang, low, high), low == 0 or inner.empty, inner.first,
                         inner.last)
        return _UNKNOWN  # back references, conditionals, anything new

    def seq_info(self, items: list[Item]) -> _Info:
        infos = [self.info(item) for item in items]
        lang: frozenset[str] | None = frozenset({""})
        for info in infos:
            lang = _concat(lang, info.lang)
        return _Info(lang, all(i.empty for i in infos), _starts_closing(infos),
                     _starts_closing(infos[::-1], last=True))


    def need(self, items: list[Item], *, left: bool, right: bool) -> _Need | None:
        """What every match of the sequence ``items`` contains; ``left``/``right``: the
        characters just outside a match are known not to be alphanumeric."""
        infos = [self.info(item) for item in items]
        count = len(infos)
        before = [left] * (count + 1)  # before[i]: closed just before element i
        for i, info in enumerate(infos):
            before[i + 1] = info.last and (before[i] or not info.empty)
        after = [right] * (count + 1)  # after[i]: closed just after element i
        for i in range(count - 1, 0, -1):
            info = infos[i]
            after[i - 1] = info.first and (after[i] or not info.empty)
        candidates: list[_Need] = []
        i = 0
        while i < count:
            if infos[i].lang is None:
                child = self._child(items[i], left=before[i], right=after[i])
                if child is not None:
                    candidates.append(child)
                i += 1
                continue
            lang: frozenset[str] = frozenset({""})
            j = i
            while j < count:
                merged = _concat(lang, infos[j].lang)
                if merged is None:
                    break
                lang, j = merged, j + 1
            run = self._run(lang, left=before[i], right=after[j - 1])
            if run is not None:
                candidates.append(run)
            i = j
        return min(candidates, key=self._score, default=None)

    def _child(self, item: Item, *, left: bool, right: bool) -> _Need | None:
        op, arg = item
        name = str(op)
        if name == "SUBPATTERN":
            _group, add_flags, del_flags, sub = arg
            return None if add_flags or del_flags else self.need(list(sub), left=left,
                                                                 right=right)
        if name == "ATOMIC_GROUP":
            return self.need(list(arg), left=left, right=right)
        if name == "BRANCH":
            found: _Need | None = _Need(frozenset(), frozenset())
            for alt in arg[1]:
                need = self.need(list(alt), left=left, right=right)
                if need is None or found is None:
                    return None
                found = found | need
            return found
        if name in _REPEATS:
            low, high, sub = arg
            if low < 1:
                return None
            inner = self.seq_info(list(sub))
            # the first round is followed by the next round's start, or by what follows
            return self.need(list(sub), left=left,
                             right=right if high == 1 else right and inner.first)
        return None

    def _run(self, lang: frozenset[str], *, left: bool, right: bool) -> _Need | None:
        """What a run of elements matching only the strings of ``lang`` contains: for each
        string, the least common of its closed words or the string itself."""
        words: set[str] = set()
        fragments: set[str] = set()
        for text in lang:
            options = [(self._cost(m.group()), False, m.group()) for m in _WORD.finditer(text)
                       if (m.start() > 0 or left) and (m.end() < len(text) or right)]
            fragment = text.replace(_MARK, "")
            if fragment:  # a word is the better evidence of the two at the same cost
                options.append((self._cost(fragment, fragment=True), True, fragment))
            if not options:
                return None
            _cost, is_fragment, item = min(options)
            (fragments if is_fragment else words).add(item)
        return _Need(frozenset(words), frozenset(fragments))

    def _cost(self, item: str, *, fragment: bool = False) -> int:
        """How likely ordinary text holds ``item``: common and short words, lone
        punctuation and short Latin fragments are poor evidence."""
        if not fragment:
            return 8 if item in self.common else {1: 2, 2: 2, 3: 1, 4: 1}.get(len(item), 0)
        if not any(c.isalnum() for c in item):
            return 20 if len(item) == 1 else 0
        if not item.isascii():
            return 0
        # found inside words too, and slow to look for among letters
        return {1: 10, 2: 10, 3: 4, 4: 2}.get(len(item), 1)

    def _score(self, need: _Need) -> tuple[int, bool, int]:
        """The least likely evidence first, then words over fragments, then fewer."""
        cost = sum(self._cost(w) for w in need.words) + sum(
            self._cost(f, fragment=True) for f in need.fragments)
        return (cost, bool(need.fragments), len(need.words) + len(need.fragments))
