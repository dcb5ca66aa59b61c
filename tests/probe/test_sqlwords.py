"""The normalizer's word lists (probe/sqlwords.py): well-formed, and what templates upper-case."""

from __future__ import annotations

from probe.normalize import build_template
from probe.sqlwords import FUNCTION_NAMES, RESERVED_WORDS


def test_the_lists_hold_upper_case_bare_words() -> None:
    for word in RESERVED_WORDS | FUNCTION_NAMES:
        assert word == word.upper() and word.replace("_", "").isalnum(), word


def test_a_reserved_word_is_upper_cased_and_a_function_only_before_a_parenthesis() -> None:
    assert "SELECT" in RESERVED_WORDS and "CONCAT" in FUNCTION_NAMES and "CONCAT" not in RESERVED_WORDS
    assert build_template("select concat(a, 'x') from t") == "SELECT CONCAT(a, ?) FROM t"
    assert build_template("select concat from t") == "SELECT concat FROM t"
