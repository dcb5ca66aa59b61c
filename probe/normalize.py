"""SQL text -> template and key: the normalizer on the hot path.

Owns the template rules of DESIGN.md ("Templates"): literals (strings, numbers, hex, bit)
become ``?``; ``IN (...)`` lists of literals and multi-row ``VALUES (...), (...)`` collapse;
comments go, real optimizer hints ``/*+ ... */`` stay with their literals as ``?``
(``probe.redact``), executable comments ``/*! ... */`` keep their content; an account's
host (``'u'@'h'``) is a literal; whitespace is canonical; reserved words and built-in function names are
upper-cased while identifiers keep their spelling (backticks dropped). Nothing is ever
rejected: text that does not parse still tokenizes, and unknown characters pass through.

Two stages keep it fast:

1. *skeleton*: one compiled ``re.sub`` replaces literals with ``?`` (C speed, no Python
   callback) when the text has no comments and no unusual quoted identifiers;
2. *template*: a full tokenizer turns the skeleton into the canonical template. Its result
   is cached by skeleton, so statements that differ only in their literals (the normal case)
   pay for stage 1 and one dict lookup.

Text with comments or quoted identifiers holding quote characters goes through the
tokenizer directly (cached by raw text). Both caches are bounded; a full cache is cleared
and the reset counted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import NamedTuple

from probe.redact import optimizer_hint
from probe.sqlwords import FUNCTION_NAMES, RESERVED_WORDS

# -- shared literal syntax ---------------------------------------------------------------
# The fast path and the tokenizer must agree on what a literal is, so both are built from
# these pieces. A number may not start inside a word (``sbtest1``) nor run into one (``1abc``).
_SQ_STRING = r"'[^'\\]*+(?:(?:\\.|'')[^'\\]*+)*+'"
_DQ_STRING = r'"[^"\\]*+(?:(?:\\.|"")[^"\\]*+)*+"'
_STRING_PREFIX = r"(?:(?<![\w$])(?:[nNxXbB]|_[A-Za-z0-9]+))"
_NUMBER_BODY = (
    r"(?:0[xX][0-9a-fA-F]+|0[bB][01]+|\d+\.?\d*(?:[eE][+-]?\d+)?)(?![\w$])"
    r"|\.\d+(?:[eE][+-]?\d+)?(?![\w$])"
)

# Every branch starts with a plain character (lookbehinds come after it) so that the regex
# engine can skip to candidate characters: 2.3x faster than leading lookbehinds.
_FAST_LITERAL = re.compile(
    rf"{_SQ_STRING}|{_DQ_STRING}|[nNxXbB](?<![\w$].){_SQ_STRING}|_(?<![\w$]_)[A-Za-z0-9]+{_SQ_STRING}"
    r"|\d(?<![\w$`@.]\d)(?:(?<=0)[xX][0-9a-fA-F]+|(?<=0)[bB][01]+|\d*\.?\d*(?:[eE][+-]?\d+)?)(?![\w$])"
    # Not the fraction of a number the branch above left alone (`t`1.5): the tokenizer
    # reads that as one number, so the skeleton must keep it whole.
    r"|\.(?<!\d\.)\d+(?:[eE][+-]?\d+)?(?![\w$])",
    re.DOTALL,
)
# Text whose backtick identifiers are all plain names: they cannot hide a quote or a
# comment from the fast path. Possessive quantifiers keep a failed match linear.
_PLAIN_BACKTICKS = re.compile(r"(?:[^`]++|`[\w$]*+`)*+")
_PLAIN_NAME = re.compile(r"[\w$]+")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<hint>/\*\+.*?(?:\*/|\Z))
  | (?P<execstart>/\*M?!\d*)
  | (?P<comment>/\*.*?(?:\*/|\Z)|(?:--(?=\s|\Z)|\#)[^\n]*)
  | (?P<execend>\*/)
  | (?P<string>"""
    + _STRING_PREFIX
    + r"""?'(?:[^'\\]|\\.|'')*(?:'|\Z)|"(?:[^"\\]|\\.|"")*(?:"|\Z))
  | (?P<number>"""
    + _NUMBER_BODY
    + r""")
  | (?P<ident>`(?:[^`]|``)*(?:`|\Z))
  | (?P<var>@@[\w$]+(?:\.[A-Za-z_$][\w$]*)?|@(?:`(?:[^`]|``)*`|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[\w$]+)?)
  | (?P<word>[\w$]+)
  | (?P<ph>\?)
  | (?P<op>:=|<=>|->>|->|<<|>>|<=|>=|<>|!=|\|\||&&|[-+*/%=<>!~^&|.,;()\[\]{}:])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# Token kinds after classification.
_KW = 1  # keyword or built-in function name (upper-cased)
_ID = 2  # identifier
_LIT = 3  # literal or placeholder: '?'
_OP = 4  # operator or punctuation
_VAR = 5  # @user or @@system variable
_HINT = 6  # optimizer hint comment, kept


# Keywords after which "(" opens a list or subquery, so the template keeps a space.
_SPACED_BEFORE_PAREN = frozenset(
    [
        "AND",
        "OR",
        "NOT",
        "XOR",
        "IN",
        "ON",
        "USING",
        "WHERE",
        "FROM",
        "JOIN",
        "SELECT",
        "AS",
        "EXISTS",
        "ANY",
        "ALL",
        "SOME",
        "SET",
        "BY",
        "HAVING",
        "WHEN",
        "THEN",
        "ELSE",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "INTO",
        "TABLE",
        "WITH",
        "RETURN",
        "IS",
        "LIKE",
        "BETWEEN",
        "CASE",
        "DISTINCT",
        "LIMIT",
        "OFFSET",
        "OVER",
        "PARTITION",
        "WINDOW",
        "RECURSIVE",
        "KEY",
        "INDEX",
    ]
)
_NO_SPACE_BEFORE = frozenset({",", ")", ".", ";", "]"})
_NO_SPACE_AFTER = frozenset({"(", ".", "["})
_SIGNS = frozenset({"-", "+"})
_COMPOUND_START = re.compile(
    r"\s*(?:CREATE\b(?:\s+OR\s+REPLACE)?(?:\s+DEFINER\s*=\s*\S+)?(?:\s+\w+)*?\s+"
    r"(?:PROCEDURE|FUNCTION|TRIGGER|EVENT|PACKAGE)\b|BEGIN\s+NOT\s+ATOMIC\b|IF\b|WHILE\b|LOOP\b|REPEAT\b"
    r"|CASE\b|FOR\b|DECLARE\b|\w+\s*:\s*(?:BEGIN|LOOP|WHILE|REPEAT|FOR)\b)",
    re.IGNORECASE,
)

#: Default number of entries per normalizer cache.
DEFAULT_CACHE_SIZE = 20_000
#: Longest template kept (characters); longer ones are cut, like performance_schema's
#: ``max_digest_length``, so that huge statements stay bounded.
DEFAULT_MAX_TEMPLATE_CHARS = 4096


class Template(NamedTuple):
    """A normalized statement: ``key`` is the first 16 hex digits of md5(text)."""

    key: str
    text: str


def template_key(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _tokens(sql: str) -> Iterator[tuple[int, str]]:
    """Classified tokens of ``sql``; comments dropped, literals as ``?``."""
    in_exec_comment = 0
    host_end = -1  # end of an account's host: adjacent ``.name`` parts belong to it
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        text = match.group()
        if match.start() == host_end and (text == "." or kind in ("word", "number", "ph", "string")):
            host_end = match.end()
            continue
        if kind == "word":
            upper = text.upper()
            if upper in RESERVED_WORDS or (upper in FUNCTION_NAMES and sql[match.end() : match.end() + 1] == "("):
                yield _KW, upper
            else:
                yield _ID, text
        elif kind == "ws" or kind == "comment":
            continue
        elif kind == "string" or kind == "number" or kind == "ph":
            yield _LIT, "?"
        elif kind == "op":
            yield _OP, text
        elif kind == "ident":
            body = text[1:-1] if text.endswith("`") and len(text) > 1 else text[1:]
            # Plain names lose their backticks; odd ones keep them so the template stays readable.
            yield _ID, body if _PLAIN_NAME.fullmatch(body) else text
        elif kind == "var":
            # An account's host ('u'@'h', u@h): a literal, whatever its quoting.
            if text[1:2] in ("'", '"', "`") or (match.start() and sql[match.start() - 1] in "'\"`_$?" + _WORD):
                host_end = match.end()
                yield _VAR, "@?"
            else:
                yield _VAR, text
        elif kind == "hint":
            hint = optimizer_hint(text)  # None: not a real hint, dropped like a comment
            if hint is not None:
                yield _HINT, hint
        elif kind == "execstart":
            in_exec_comment += 1
        elif kind == "execend":
            if in_exec_comment:
                in_exec_comment -= 1
            else:
                yield _OP, "*"
                yield _OP, "/"
        else:
            yield _OP, text


def _is_operand(kind: int, text: str) -> bool:
    return kind in (_ID, _LIT, _VAR) or text == ")"


def _matching_paren(tokens: list[tuple[int, str]], open_index: int) -> int:
    """Index of the ``)`` closing ``tokens[open_index]``; ``len(tokens)`` if cut off."""
    depth = 0
    for i in range(open_index, len(tokens)):
        text = tokens[i][1]
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth == 0:
                return i
    return len(tokens)


def _only_literals(tokens: list[tuple[int, str]]) -> bool:
    return all(kind == _LIT or text in ("(", ")", ",", "NULL", "-", "+") for kind, text in tokens)


def _collapse(tokens: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Fold signs into literals, collapse IN lists and multi-row VALUES."""
    out: list[tuple[int, str]] = []
    i = 0
    n = len(tokens)
    while i < n:
        kind, text = tokens[i]
        if (
            text in _SIGNS
            and kind == _OP
            and i + 1 < n
            and tokens[i + 1][0] == _LIT
            and not (out and _is_operand(*out[-1]))
        ):
            i += 1
            continue
        if kind == _KW and text == "IN" and i + 1 < n and tokens[i + 1][1] == "(":
            end = _matching_paren(tokens, i + 1)
            if _only_literals(tokens[i + 2 : end]):
                out.append((_KW, "IN"))
                out.append((_LIT, "(...)"))
                i = end + 1
                continue
        if (
            kind == _KW
            and text in ("VALUES", "VALUE")
            and i + 1 < n
            and tokens[i + 1][1] == "("
            and out
            and (out[-1][0] == _ID or out[-1][1] == ")")
        ):
            end = _matching_paren(tokens, i + 1)
            while end + 2 < n and tokens[end + 1][1] == "," and tokens[end + 2][1] == "(":
                end = _matching_paren(tokens, end + 2)
            out.append((_KW, text))
            out.append((_LIT, "(...)"))
            i = end + 1
            continue
        out.append((kind, text))
        i += 1
    while out and out[-1][1] == ";":
        out.pop()
    return out


def _render(tokens: list[tuple[int, str]]) -> str:
    parts: list[str] = []
    prev_kind = 0
    prev_text = ""
    for kind, text in tokens:
        if parts and not (
            text in _NO_SPACE_BEFORE
            or prev_text in _NO_SPACE_AFTER
            or (text == "(" and (prev_kind == _ID or (prev_kind == _KW and prev_text not in _SPACED_BEFORE_PAREN)))
            or (prev_kind == _OP and prev_text in ("@", "~"))
        ):
            parts.append(" ")
        parts.append(text)
        prev_kind, prev_text = kind, text
    return "".join(parts)


def build_template(sql: str, max_chars: int = DEFAULT_MAX_TEMPLATE_CHARS) -> str:
    """The template of ``sql`` by full tokenization (the slow, always-correct path)."""
    text = _render(_collapse(list(_tokens(sql))))
    if len(text) > max_chars:
        text = text[:max_chars]
    return text


def split_statements(sql: str) -> list[str]:
    """Split a multi-statement query on top-level ``;``.

    Compound statements (``CREATE PROCEDURE ... BEGIN ...; END``, ``BEGIN NOT ATOMIC``,
    ``IF``/``WHILE`` blocks) are one statement, as the server parses them.
    """
    if ";" not in sql or _COMPOUND_START.match(sql):
        return [sql]
    pieces: list[str] = []
    start = 0
    for match in _TOKEN.finditer(sql):
        if match.lastgroup == "op" and match.group() == ";":
            piece = sql[start : match.start()]
            if piece.strip():
                pieces.append(piece)
            start = match.end()
    tail = sql[start:]
    if tail.strip():
        pieces.append(tail)
    return pieces or [sql]


def count_placeholders(sql: str) -> int:
    """The ``?`` parameter markers of a prepared statement's text (not those in strings or
    comments)."""
    return sum(1 for match in _TOKEN.finditer(sql) if match.lastgroup == "ph")


class Normalizer:
    """Caching SQL normalizer. Not thread-safe; one per worker.

    ``cache_size`` bounds each of the two caches (raw text and skeleton); when one fills up
    it is cleared and ``cache_resets`` counts it.
    """

    def __init__(
        self,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_template_chars: int = DEFAULT_MAX_TEMPLATE_CHARS,
    ) -> None:
        self.cache_size = cache_size
        self.max_template_chars = max_template_chars
        self._by_raw: dict[str, Template] = {}
        self._by_skeleton: dict[str, Template] = {}
        self.cache_resets = 0

    def normalize(self, sql: str) -> Template:
        hit = self._by_raw.get(sql)
        if hit is not None:
            return hit
        if (
            "/*" in sql
            or "--" in sql
            or "#" in sql
            or "@'" in sql
            or '@"' in sql
            or ("`" in sql and not _PLAIN_BACKTICKS.fullmatch(sql))
        ):
            result = self._make(sql)
            cache = self._by_raw
            key = sql
        else:
            skeleton = _FAST_LITERAL.sub("?", sql)
            if "'" in skeleton or '"' in skeleton:
                # An unterminated string: only the tokenizer knows where it ends.
                result = self._make(sql)
                self._remember(self._by_raw, sql, result)
                return result
            cached = self._by_skeleton.get(skeleton)
            if cached is not None:
                return cached
            result = self._make(skeleton)
            if skeleton == sql:
                # Literal-free statements (BEGIN, COMMIT, ...) also hit the raw cache first.
                self._remember(self._by_raw, sql, result)
            cache = self._by_skeleton
            key = skeleton
        self._remember(cache, key, result)
        return result

    def _make(self, sql: str) -> Template:
        text = build_template(sql, self.max_template_chars)
        return Template(template_key(text), text)

    def _remember(self, cache: dict[str, Template], key: str, value: Template) -> None:
        if len(cache) >= self.cache_size:
            cache.clear()
            self.cache_resets += 1
        cache[key] = value
