/* probe._cflows, part three: the byte readers of the fast path (_cexchange.c).
 *
 * skeleton(): the literal skeleton of a statement, byte for byte what
 * probe.normalize._FAST_LITERAL.sub("?", sql) gives (tests/probe/test_cexchange.py proves
 * it on generated text against the regex), for text the normalizer would put through its
 * skeleton cache; parse_response(): a server segment of a response of the kinds the fast
 * path completes (an OK, a result set, an ERR, or several results of a CALL, the segment
 * ending with the response or after a result with more to come), read as
 * Responses._server_plain reads them. Neither keeps any state: the response so far is the
 * caller's (a Resp).
 *
 * Multi-results: for a statement that is not a multi-statement text (those never reach the
 * fast path: ';'), Python only adds up rows and affected rows over the results and goes
 * back to state R_FIRST (Responses._statement_end); the statement ends with the last
 * packet's status and warnings, or with an ERR (status and warnings 0, the earlier rows
 * kept). SERVER_PS_OUT_PARAMS (a prepared CALL's OUT parameters) means nothing to it.
 */
#include "_cflows.h"

#define MAX_PACKET 0xFFFFFF
#define MORE_RESULTS 0x0008
#define SESSION_STATE_CHANGED 0x4000

/* -- the literal skeleton (probe.normalize._FAST_LITERAL, emulated) ------------------------ */

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_alnum(unsigned char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }
static inline int is_word(unsigned char c) { return is_alnum(c) || c == '_' || c == '$'; } /* [\w$] (ASCII) */
static inline int is_hex(unsigned char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static inline int ends_ok(const unsigned char *s, Py_ssize_t n, Py_ssize_t e) { return e >= n || !is_word(s[e]); }

/* End of a string quoted by s[i] (possessive: '' and backslash escapes), or -1. */
static Py_ssize_t quoted_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    const unsigned char q = s[i];
    Py_ssize_t j = i + 1;
    for (;;) {
        while (j < n && s[j] != q && s[j] != '\\') j++;
        if (j >= n) return -1;
        if (s[j] == '\\') {
            if (j + 1 >= n) return -1;
            j += 2;
        } else if (j + 1 < n && s[j + 1] == q) {
            j += 2;
        } else {
            return j + 1;
        }
    }
}

/* End of [eE][+-]?\d+ at j, or -1. */
static Py_ssize_t exponent_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t j) {
    if (j >= n || (s[j] | 0x20) != 'e') return -1;
    Py_ssize_t k = j + 1;
    if (k < n && (s[k] == '+' || s[k] == '-')) k++;
    if (k >= n || !is_digit(s[k])) return -1;
    while (k < n && is_digit(s[k])) k++;
    return k;
}

/* The end of the literal _FAST_LITERAL matches at i (the regex's backtracking order), or -1. */
static Py_ssize_t literal_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    const unsigned char c = s[i];
    const int after_word = i > 0 && is_word(s[i - 1]);
    if (c == '\'' || c == '"') return quoted_end(s, n, i);
    if (c == 'n' || c == 'N' || c == 'x' || c == 'X' || c == 'b' || c == 'B') {
        if (after_word || i + 1 >= n || s[i + 1] != '\'') return -1;
        return quoted_end(s, n, i + 1);
    }
    if (c == '_') {
        if (after_word) return -1;
        Py_ssize_t k = i + 1;
        while (k < n && is_alnum(s[k])) k++;
        if (k == i + 1 || k >= n || s[k] != '\'') return -1;
        return quoted_end(s, n, k);
    }
    if (is_digit(c)) {
        if (i > 0 && (is_word(s[i - 1]) || s[i - 1] == '`' || s[i - 1] == '@' || s[i - 1] == '.')) return -1;
        if (c == '0' && i + 1 < n && ((s[i + 1] | 0x20) == 'x' || (s[i + 1] | 0x20) == 'b')) {
            const int hex = (s[i + 1] | 0x20) == 'x';
            Py_ssize_t k = i + 2;
            while (k < n && (hex ? is_hex(s[k]) : (s[k] == '0' || s[k] == '1'))) k++;
            if (k > i + 2 && ends_ok(s, n, k)) return k;
        }
        Py_ssize_t d1 = i + 1;
        while (d1 < n && is_digit(s[d1])) d1++;
        if (d1 < n && s[d1] == '.') {
            Py_ssize_t d2 = d1 + 1;
            while (d2 < n && is_digit(s[d2])) d2++;
            Py_ssize_t e = exponent_end(s, n, d2);
            if (e >= 0 && ends_ok(s, n, e)) return e;
            if (ends_ok(s, n, d2)) return d2;
            return d1; /* the number without its '.': a '.' follows, never a word character */
        }
        Py_ssize_t e = exponent_end(s, n, d1);
        if (e >= 0 && ends_ok(s, n, e)) return e;
        return ends_ok(s, n, d1) ? d1 : -1;
    }
    if (c == '.') {
        if ((i > 0 && is_digit(s[i - 1])) || i + 1 >= n || !is_digit(s[i + 1])) return -1;
        Py_ssize_t d = i + 1;
        while (d < n && is_digit(s[d])) d++;
        Py_ssize_t e = exponent_end(s, n, d);
        if (e >= 0 && ends_ok(s, n, e)) return e;
        return ends_ok(s, n, d) ? d : -1;
    }
    return -1;
}

/* The skeleton of sql into out (room for n bytes): its length, or -1 when the normalizer
 * would not take its skeleton path with it (or when this path declines it). */
Py_ssize_t skeleton(const unsigned char *s, Py_ssize_t n, char *out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char c = s[i];
        if (c >= 0x80 || c == ';' || c == '#') return -1;
        if (i + 1 < n) {
            const unsigned char d = s[i + 1];
            if ((c == '/' && d == '*') || (c == '-' && d == '-') || (c == '@' && (d == '\'' || d == '"'))) return -1;
        }
        if (c == '`') { /* only plain names: `[\w$]*` */
            Py_ssize_t k = i + 1;
            while (k < n && is_word(s[k])) k++;
            if (k >= n || s[k] != '`') return -1;
            i = k;
        }
    }
    Py_ssize_t len = 0;
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t end = literal_end(s, n, i);
        if (end > i) {
            out[len++] = '?';
            i = end;
        } else {
            if (s[i] == '\'' || s[i] == '"') return -1; /* an unterminated string */
            out[len++] = (char)s[i++];
        }
    }
    return len;
}

PyObject *fx_skeleton(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "skeleton() takes bytes");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    char *out = PyMem_Malloc(n + 1);
    if (out == NULL) return PyErr_NoMemory();
    Py_ssize_t len = skeleton((const unsigned char *)PyBytes_AS_STRING(arg), n, out);
    PyObject *result = len < 0 ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(out, len);
    PyMem_Free(out);
    return result;
}

/* -- the server's response ------------------------------------------------------------------ */

/* A length-encoded integer of an OK payload at *pos (as probe.mysql.packets.lenenc reads
 * it: 1, 3, 4 or 9 bytes): 1 and *pos moved past it, or 0 (0xFB, 0xFF or truncated). An
 * insert id above 250 takes 3 bytes or more: sysbench's INSERTs carry their explicit id. */
static int ok_lenenc(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos, unsigned long long *out) {
    Py_ssize_t at = *pos, size;
    if (at >= n) return 0;
    unsigned first = p[at];
    if (first < 0xFB) {
        *out = first;
        *pos = at + 1;
        return 1;
    }
    size = first == 0xFC ? 2 : first == 0xFD ? 3 : first == 0xFE ? 8 : -1;
    if (size < 0 || at + 1 + size > n) return 0;
    unsigned long long value = 0;
    for (Py_ssize_t i = size; i > 0; i--) value = value << 8 | p[at + i];
    *out = value;
    *pos = at + 1 + size;
    return 1;
}

/* One result from d[*pos] (Python's state R_FIRST) into r: RESP_DONE when it ends the
 * response exactly at n, RESP_MORE (*pos moved past it) when its last packet's status has
 * MORE_RESULTS, else RESP_NONE. deprecate: what conv.deprecate_eof is at its start. */
static int parse_result(const unsigned char *d, const Py_ssize_t n, Py_ssize_t *at, int deprecate, Resp *r) {
    Py_ssize_t pos = *at;
    if (n - pos < 5) return RESP_NONE;
    Py_ssize_t length = le24(d + pos), end = pos + 4 + length;
    if (length == 0 || length >= MAX_PACKET || end > n) return RESP_NONE;
    unsigned first = d[pos + 4];
    if (first == 0xFF) {
        /* An ERR packet (Responses._response_packet, state R_FIRST: the statement ends with
         * it, status and warnings 0). Code 0 counts no error in Aggregator.add and 0xFFFF
         * may be MariaDB's progress report (the statement goes on): both are Python's. The
         * sqlstate and message only reach slow samples, which are Python's. */
        if (end != n || length < 3) return RESP_NONE;
        r->err_code = le16(d + pos + 5);
        r->status = r->warnings = 0;
        return r->err_code != 0 && r->err_code != 0xFFFF ? RESP_DONE : RESP_NONE;
    }
    if (first == 0) { /* an OK packet: affected rows, insert id, status, warnings */
        const unsigned char *ok = d + pos + 4;
        Py_ssize_t at_ok = 1;
        unsigned long long affected, insert_id;
        if (!ok_lenenc(ok, length, &at_ok, &affected) || !ok_lenenc(ok, length, &at_ok, &insert_id)) return RESP_NONE;
        /* Python reads status and warnings only when both are there: without them, decline. */
        if (at_ok + 4 > length || affected >= (1ULL << 32)) return RESP_NONE;
        r->status = le16(ok + at_ok);
        if (r->status & SESSION_STATE_CHANGED) return RESP_NONE;
        r->affected += (long long)affected;
        r->warnings = le16(ok + at_ok + 2);
        *at = end;
        return r->status & MORE_RESULTS ? RESP_MORE : end == n ? RESP_DONE : RESP_NONE;
    }
    /* The column count, alone or with MariaDB's metadata flag: 1, definitions follow; 0, the
     * client cached them (MARIADB_CLIENT_CACHE_METADATA: the executes of a prepared
     * statement), as Responses._column_count reads it. */
    if (!(first < 0xFB && (length == 1 || (length == 2 && d[pos + 5] <= 1)))) return RESP_NONE;
    const unsigned definitions = length == 2 && d[pos + 5] == 0 ? 0 : first;
    pos = end;
    for (unsigned col = 0; col < definitions; col++) { /* column definitions */
        if (n - pos < 4) return RESP_NONE;
        length = le24(d + pos);
        end = pos + 4 + length;
        if (length == 0 || length >= MAX_PACKET || end > n) return RESP_NONE;
        pos = end;
    }
    if (deprecate != 1) { /* R_COLS_END: the EOF, or rows straight away (DEPRECATE_EOF) */
        if (n - pos < 5) return RESP_NONE;
        length = le24(d + pos);
        if (length == 0 || length >= MAX_PACKET || pos + 4 + length > n) return RESP_NONE;
        if (d[pos + 4] == 0xFE) {
            if (length != 5) return RESP_NONE;
            r->deprecate = 0;
            pos += 9;
        } else if (d[pos + 4] == 0xFF) {
            return RESP_NONE;
        } else {
            r->deprecate = 1;
        }
    }
    for (;;) { /* rows, then the final EOF */
        if (n - pos < 5) return RESP_NONE;
        length = le24(d + pos);
        end = pos + 4 + length;
        if (length == 0 || length >= MAX_PACKET || end > n) return RESP_NONE;
        first = d[pos + 4];
        if (first < 0xFE) {
            r->rows++;
            pos = end;
            continue;
        }
        if (first == 0xFF || length >= 9) return RESP_NONE;
        r->warnings = length >= 5 ? le16(d + pos + 5) : 0;
        r->status = length >= 5 ? le16(d + pos + 7) : 0;
        *at = end;
        return r->status & MORE_RESULTS ? RESP_MORE : end == n ? RESP_DONE : RESP_NONE;
    }
}

/* How data, the next server segment of a held exchange, goes on with the response r holds
 * so far (a fresh r: RESP_INIT): RESP_DONE when it ends the response, RESP_MORE when it
 * ends right after a result or OK whose status says more results follow (a CALL: the
 * response goes on in a later segment, from Python's state R_FIRST), else RESP_NONE (the
 * exchange is Python's; r is then garbage). deprecate: conv.deprecate_eof (1 True, 0
 * False, -1 None), which r->deprecate overrides once a result set told. Packets are read
 * as Responses._server_plain reads them; empty and 16 MiB packets are left to it. Rows and
 * affected rows add up over the results (Python's Request.rows and .affected); status and
 * warnings are the last packet's (what _finish emits), and 0 for an ERR, whether it comes
 * first or after results (both end the statement in state R_FIRST). */
int parse_response(const unsigned char *d, Py_ssize_t n, int deprecate, Resp *r) {
    Py_ssize_t pos = 0;
    for (;;) {
        int got = parse_result(d, n, &pos, r->deprecate >= 0 ? r->deprecate : deprecate, r);
        if (got != RESP_MORE || pos == n) return got;
    }
}
