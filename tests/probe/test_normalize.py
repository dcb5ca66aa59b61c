"""Template rules of DESIGN.md, and the fast path agreeing with the full tokenizer."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.normalize import Normalizer, build_template, split_statements, template_key


@pytest.mark.parametrize(
    ("sql", "template"),
    [
        ("SELECT c FROM sbtest1 WHERE id=50123", "SELECT c FROM sbtest1 WHERE id = ?"),
        ("select c from sbtest1 where id = 7", "SELECT c FROM sbtest1 WHERE id = ?"),
        ("SELECT c FROM sbtest2 WHERE id=1", "SELECT c FROM sbtest2 WHERE id = ?"),
        ("SELECT `key`, `Status` FROM `T` WHERE a='x'", "SELECT key, Status FROM T WHERE a = ?"),
        ("SELECT * FROM t WHERE b IN (1,2, 3)", "SELECT * FROM t WHERE b IN (...)"),
        ("SELECT * FROM t WHERE b IN ('a')", "SELECT * FROM t WHERE b IN (...)"),
        ("SELECT * FROM t WHERE b NOT IN (1, NULL, -3)", "SELECT * FROM t WHERE b NOT IN (...)"),
        ("SELECT * FROM t WHERE (a,b) IN ((1,2),(3,4))", "SELECT * FROM t WHERE (a, b) IN (...)"),
        (
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c=1)",
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = ?)",
        ),
        ("INSERT INTO t (a,b) VALUES (1,'x'),(2,'y'), (3, NULL)", "INSERT INTO t(a, b) VALUES (...)"),
        ("INSERT INTO t (a,b) VALUES (1,'x')", "INSERT INTO t(a, b) VALUES (...)"),
        (
            "INSERT INTO t VALUES (1,'x') ON DUPLICATE KEY UPDATE a=VALUES(a)",
            "INSERT INTO t VALUES (...) ON DUPLICATE KEY UPDATE a = VALUES(a)",
        ),
        ("SELECT /* why */ 1 -- trailing", "SELECT ?"),
        ("SELECT 1 # mysql comment", "SELECT ?"),
        (
            "SELECT /*+ MAX_EXECUTION_TIME(1000)   */ a FROM t",
            "SELECT /*+ MAX_EXECUTION_TIME(?) */ a FROM t",
        ),
        ("/*!40101 SET NAMES utf8 */", "SET NAMES utf8"),
        ("SELECT x FROM t WHERE x=-5 AND y = a-3", "SELECT x FROM t WHERE x = ? AND y = a - ?"),
        ("SELECT count(*) FROM t", "SELECT COUNT(*) FROM t"),
        ("SELECT count FROM t", "SELECT count FROM t"),
        ("SELECT 0x1F, X'0F', b'01', 0b11, N'abc', _utf8mb4'x', 1.5e3, .5", "SELECT ?, ?, ?, ?, ?, ?, ?, ?"),
        (
            "SELECT a FROM t WHERE s LIKE '%x\\'y%' AND z = 'it''s'",
            "SELECT a FROM t WHERE s LIKE ? AND z = ?",
        ),
        ('SELECT "double" FROM t', "SELECT ? FROM t"),
        ("SELECT 'unterminated", "SELECT ?"),
        ("select 1;", "SELECT ?"),
        ("  COMMIT  ", "COMMIT"),
        ("SET @@session.autocommit = 1", "SET @@session.autocommit = ?"),
        ("SELECT t.*, t.a FROM db.t AS t LIMIT 10, 20", "SELECT t.*, t.a FROM db.t AS t LIMIT ?, ?"),
        ("SELECT `odd name` FROM t", "SELECT `odd name` FROM t"),
        ("SELECT c FROM t WHERE id = ?", "SELECT c FROM t WHERE id = ?"),
        ("SELECT 1abc, t1.c2 FROM t1", "SELECT 1abc, t1.c2 FROM t1"),
        ("SELECT\n\tc\r\nFROM   t", "SELECT c FROM t"),
        # Only real optimizer hints stay, and without their literals.
        ("SELECT /*+ 'pw-in-a-comment' */ 1", "SELECT ?"),
        ("SELECT 1 /*+ secret stuff */", "SELECT ?"),
        ("SELECT /*+ BKA(t1) NO_BKA(`t2`) */ a FROM t1", "SELECT /*+ BKA(t1) NO_BKA(`t2`) */ a FROM t1"),
        (
            "SELECT /*+ SET_VAR(sort_buffer_size = 16M) INDEX(t 'x') */ a FROM t",
            "SELECT /*+ SET_VAR(sort_buffer_size = ?) INDEX(t ?) */ a FROM t",
        ),
        ("SELECT /*+ MAX_EXECUTION_TIME(1000 */ a", "SELECT a"),
        # An account's host is a literal, quoted or not; user variables stay.
        ("CREATE USER 'bob'@'10.9.8.7' IDENTIFIED BY 'pw'", "CREATE USER ? @? IDENTIFIED BY ?"),
        ("GRANT SELECT ON shop.* TO bob@secret.example", "GRANT SELECT ON shop.* TO bob @?"),
        ("SELECT @a, @@version FROM t WHERE b = @c", "SELECT @a, @@version FROM t WHERE b = @c"),
        ("DROP USER u@10.1.2.3, 'v'@'%'", "DROP USER u @?, ? @?"),
    ],
)
def test_template_rules(sql: str, template: str) -> None:
    assert Normalizer().normalize(sql).text == template
    assert build_template(sql) == template


def test_key_is_md5_prefix() -> None:
    template = Normalizer().normalize("SELECT 1")
    assert template.key == hashlib.md5(b"SELECT ?").hexdigest()[:16]
    assert template.key == template_key(template.text)


def test_identifiers_keep_their_spelling() -> None:
    n = Normalizer()
    assert n.normalize("SELECT c FROM sbtest1").key != n.normalize("SELECT c FROM sbtest2").key
    assert n.normalize("SELECT c FROM Users").text == "SELECT c FROM Users"


def test_caches_are_bounded() -> None:
    n = Normalizer(cache_size=10)
    for i in range(50):
        n.normalize(f"SELECT c{i} FROM t WHERE id = {i}")
    assert n.cache_resets >= 4
    assert len(n._by_skeleton) <= 10


def test_long_templates_are_cut() -> None:
    sql = "SELECT " + ", ".join(f"col{i}" for i in range(2000)) + " FROM t"
    text = Normalizer(max_template_chars=100).normalize(sql).text
    assert len(text) == 100


def test_split_statements() -> None:
    assert split_statements("SELECT 1; SELECT 'a;b'; /* ; */ UPDATE t SET a=1;") == [
        "SELECT 1",
        " SELECT 'a;b'",
        " /* ; */ UPDATE t SET a=1",
    ]
    assert split_statements("SELECT 1") == ["SELECT 1"]
    body = "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END"
    assert split_statements(body) == [body]
    block = "BEGIN NOT ATOMIC SELECT 1; END"
    assert split_statements(block) == [block]


_SQL_PIECES = st.sampled_from(
    [
        "SELECT",
        "select",
        "FROM",
        "t1",
        "`t 2`",
        "`k`",
        "WHERE",
        "id",
        "=",
        "-",
        "+",
        "1",
        "42",
        "1.5",
        ".5",
        "1e3",
        "0x1F",
        "0xZZ",
        "x'0a'",
        "b'01'",
        "N'x'",
        "_utf8'y'",
        "'str'",
        "'it''s'",
        "'a\\'b'",
        '"dq"',
        "IN",
        "(",
        ")",
        ",",
        "VALUES",
        "NULL",
        "AND",
        "/* c */",
        "/*+ HINT(1) */",
        "/*!40101",
        "*/",
        "-- x\n",
        "# y\n",
        "@v",
        "@@sql_mode",
        "@'q'",
        "?",
        ";",
        "count",
        "COUNT(",
        "a.5",
        "abc1",
        "1abc",
        "'",
        '"',
        "`",
        "\n",
        "  ",
        "é",
        "LIMIT",
        ".",
        "*",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_SQL_PIECES, max_size=25), st.lists(st.booleans(), max_size=25))
def test_fast_path_agrees_with_tokenizer(pieces: list[str], glue: list[bool]) -> None:
    sql = "".join(p + (" " if g else "") for p, g in zip(pieces, glue + [True] * len(pieces), strict=False))
    assert Normalizer().normalize(sql).text == build_template(sql)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gets_a_template(sql: str) -> None:
    template = Normalizer().normalize(sql)
    assert len(template.key) == 16
    assert isinstance(template.text, str)


@pytest.mark.parametrize("sql", ["`k`1.5", "1@v", "SELECT@vx'0a'", "1@v.5", "x@1.2.3.4"])
def test_fast_path_agrees_on_what_hypothesis_found(sql: str) -> None:
    assert Normalizer().normalize(sql).text == build_template(sql)
