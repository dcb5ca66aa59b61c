"""What must not leak literals: optimizer hints and server error messages.

Owns two rules of redaction (DESIGN.md, "Templates"; the ``redact`` setting):

- ``optimizer_hint``: a comment that starts with ``/*+`` stays in a template only when it
  is a real optimizer hint (``NAME(args) ...`` with MySQL/MariaDB hint names), and then with
  its literals as ``?`` (``MAX_EXECUTION_TIME(?)``, ``SET_VAR(sort_buffer_size = ?)``);
  anything else (``/*+ 'secret' */`` on any server) is an ordinary comment and goes.
- ``redact_message``: server error messages quote values (``Duplicate entry 'x' for key
  'k'``, ``... near 'x' at line 1``, ``Incorrect integer value: 'x'``): every quoted span
  becomes ``'?'``.
"""

from __future__ import annotations

import re

#: Optimizer hint names (MySQL 8 and MariaDB 12); matched case-insensitively.
HINT_NAMES = frozenset(
    [
        "BKA",
        "NO_BKA",
        "BNL",
        "NO_BNL",
        "DERIVED_CONDITION_PUSHDOWN",
        "NO_DERIVED_CONDITION_PUSHDOWN",
        "GROUP_INDEX",
        "NO_GROUP_INDEX",
        "HASH_JOIN",
        "NO_HASH_JOIN",
        "INDEX",
        "NO_INDEX",
        "INDEX_MERGE",
        "NO_INDEX_MERGE",
        "JOIN_FIXED_ORDER",
        "JOIN_INDEX",
        "NO_JOIN_INDEX",
        "JOIN_ORDER",
        "JOIN_PREFIX",
        "JOIN_SUFFIX",
        "MAX_EXECUTION_TIME",
        "MERGE",
        "NO_MERGE",
        "MRR",
        "NO_MRR",
        "NO_ICP",
        "NO_RANGE_OPTIMIZATION",
        "ORDER_INDEX",
        "NO_ORDER_INDEX",
        "QB_NAME",
        "RESOURCE_GROUP",
        "SEMIJOIN",
        "NO_SEMIJOIN",
        "SKIP_SCAN",
        "NO_SKIP_SCAN",
        "SET_VAR",
        "SUBQUERY",
        "SPLIT_MATERIALIZED",
        "NO_SPLIT_MATERIALIZED",
        "ROWID_FILTER",
        "NO_ROWID_FILTER",
    ]
)

_HINT_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lit>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|[+-]?\.?\d[\w.+-]*)
  | (?P<name>`(?:[^`]|``)*`|[A-Za-z_$][\w$]*)
  | (?P<punct>[(),.=@])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def optimizer_hint(comment: str) -> str | None:
    """``/*+ ... */`` in canonical form with literals as ``?``, or None if it is not a
    hint (then the caller drops it like any comment)."""
    if not comment.startswith("/*+") or not comment.endswith("*/") or len(comment) < 5:
        return None
    tokens = [(m.lastgroup, m.group()) for m in _HINT_TOKEN.finditer(comment[3:-2]) if m.lastgroup != "ws"]
    hints: list[str] = []
    i = 0
    while i < len(tokens):
        kind, name = tokens[i]
        if kind != "name" or name.upper() not in HINT_NAMES or i + 1 >= len(tokens) or tokens[i + 1][1] != "(":
            return None
        i += 2
        args = ""
        previous = "("
        while i < len(tokens) and tokens[i][1] != ")":
            kind, text = tokens[i]
            if kind == "other" or text == "(":
                return None
            if kind == "lit" or (previous == "=" and kind == "name"):
                text = "?"
            if text == "=" or previous in (",", "=") or (text not in ",.@" and previous not in ".@("):
                args += " "
            args += text
            previous = text
            i += 1
        if i >= len(tokens):
            return None  # no closing parenthesis
        hints.append(f"{name.upper()}({args.strip()})")
        i += 1
    return f"/*+ {' '.join(hints)} */" if hints else None


# Known shapes first (the value may itself hold quotes: take everything up to the tail).
_SHAPED = (
    (re.compile(r"(near )'.*'( at line \d+)\s*$", re.DOTALL), r"\1'?'\2"),
    (re.compile(r"(Duplicate entry )'.*'( for key )", re.DOTALL), r"\1'?'\2"),
)
# Any other quoted span: a quote closes only before a space, punctuation or the end.
_QUOTED = re.compile(r"""'(?:[^']|'(?![\s,.:;)\]]|$))*'|"(?:[^"]|"(?![\s,.:;)\]]|$))*\"""")


def redact_message(message: str) -> str:
    """A server error message with every quoted value replaced by ``'?'``."""
    for pattern, replacement in _SHAPED:
        message = pattern.sub(replacement, message)
    message = _QUOTED.sub("'?'", message)
    # An unmatched quote left over: everything after it may be a value.
    quote = min((i for i in (message.find("'"), message.find('"')) if i >= 0), default=-1)
    while quote >= 0 and message[quote : quote + 3] == "'?'":
        nxt = [i for i in (message.find("'", quote + 3), message.find('"', quote + 3)) if i >= 0]
        quote = min(nxt, default=-1)
    return message if quote < 0 else message[:quote] + "'?'"
