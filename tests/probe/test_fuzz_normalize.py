"""Fuzz target of the normalizer: any text gets a template and its key; a statement's
template does not depend on the literals in it (whatever quotes, escapes or comment-like
text they hold); the caches (even tiny ones that reset all the time) never change answers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.normalize import Normalizer, build_template
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz

_string_bodies = st.lists(
    st.sampled_from([*list("abc xyz?*()"), "--", "/*", "*/", "#", "''", "\\'", '"', "`", ";", "\\\\", "é", "\n"]),
    max_size=12,
).map("".join)
literals = st.one_of(
    st.integers(0, 10**12).map(str),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(str),
    st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False).map(repr),
    _string_bodies.map(lambda b: "'" + b.replace("\\", "\\\\").replace("'", "''") + "'"),
    st.binary(max_size=6).map(lambda b: f"x'{b.hex()}'"),
    st.binary(min_size=1, max_size=6).map(lambda b: f"0x{b.hex()}"),
)
SHAPES = [
    "SELECT a, b FROM t1 WHERE id = {} AND name = {}",
    "SELECT * FROM t2 WHERE c IN ({}, {}) LIMIT 10",
    "UPDATE t3 SET v = {} WHERE k = {}",
    "INSERT INTO t4 (a, b) VALUES ({}, {})",
    "DELETE FROM t5 WHERE a > {} OR b < {}",
    "SELECT /* note */ x FROM t6 WHERE y = {} AND z = {} -- trailing words\n",
]


@fuzz_settings(300)
@given(st.sampled_from(SHAPES), st.lists(literals, min_size=2, max_size=2), st.lists(literals, min_size=2, max_size=2))
def test_the_template_does_not_depend_on_literals(shape: str, first: list[str], second: list[str]) -> None:
    a = Normalizer().normalize(shape.format(*first))
    b = Normalizer().normalize(shape.format(*second))
    assert a == b, (shape.format(*first), shape.format(*second), a.text, b.text)
    for literal in first + second:
        if len(literal) > 3 and literal not in shape:
            assert literal not in a.text


@fuzz_settings(300)
@given(st.lists(st.text(max_size=80) | st.sampled_from(SHAPES), min_size=1, max_size=30), st.integers(1, 4))
def test_caches_never_change_answers(statements: list[str], cache_size: int) -> None:
    small = Normalizer(cache_size=cache_size)
    for sql in statements + statements:  # the second pass answers from caches (or after resets)
        template = small.normalize(sql)
        assert template.text == build_template(sql)
        assert template.key == hashlib.md5(template.text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@fuzz_settings(300)
@given(st.text(max_size=300), st.integers(10, 400))
def test_any_text_gets_a_bounded_template(sql: str, max_chars: int) -> None:
    template = Normalizer(max_template_chars=max_chars).normalize(sql)
    assert len(template.key) == 16 and int(template.key, 16) >= 0
    assert len(template.text) <= max_chars + 3  # an ellipsis may mark the cut
