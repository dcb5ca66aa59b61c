/* probe._cflows, part two: an ordinary COM_QUERY or COM_STMT_EXECUTE exchange completed in
 * C (see _cflows.c).
 *
 * Enabled by InOrder.attach(aggregator) (probe.engine does it). A client segment that
 * InOrder would feed to a quiescent conversation (phase COMMANDS, nothing pending, nothing
 * buffered, not desynchronised, not compressed: the "common case" branch of
 * Conversation.feed) and that holds exactly one COM_QUERY (capabilities known without
 * CLIENT_QUERY_ATTRIBUTES) whose text Normalizer.normalize would put through its skeleton
 * cache (pure ASCII, no ';', no comment marks, plain backticks, no unterminated string)
 * is looked up here by its literal skeleton: the same text as
 * probe.normalize._FAST_LITERAL.sub("?", sql), computed by skeleton() in _cwire.c, or one
 * COM_STMT_EXECUTE of a statement conv.prepared holds, taken as _cexecute.c says. On a
 * hit the segment is not fed: it is held (a Held object per connection, in
 * Connection.held). When the connection's next segment is the server's and holds the
 * whole response (an OK, a text or binary result set ended by EOF or, under
 * CLIENT_DEPRECATE_EOF, by the EOF-headed OK, or a single ERR packet: see below; or
 * several of them, see multi-results), without session state, faster than the slow
 * threshold, and its (server, db, user, key) already has a TemplateStats in the aggregator,
 * the conversation fields the feeds would have changed are set (stream offsets,
 * _c_packet_end, _s_last_ns, _server_ack, deprecate_eof) and the statement is added to the
 * C counters of _caccs.c (by command: "Query", "Execute") that fold() hands to
 * Aggregator.fold. Anything else first replays the held segments into conv.feed, each with
 * its own time and acknowledgement: so does FlowTable (Held.settle) before it touches a
 * conversation itself (other segments, gaps, teardown, expiry, close_all).
 *
 * Multi-results (a CALL, read as _cwire.c says). MariaDB flushes after each result, so
 * a server segment that ends right after a result with more to come is kept too
 * (Held.parts, at most MAX_PARTS, MAX_PARTS_BYTES in all; fast_multi_segments counts
 * such exchanges): ttfb is then the first's time (Request.first_ns), the unseen-request
 * check (an ack below the request's end) applies only before it, as in Conversation.feed.
 *
 * An ERR. Python ends the statement with it (Responses._response_packet, state R_FIRST)
 * and changes nothing else in the conversation for a COM_QUERY or an execute (only a
 * refused PREPARE marks its statement failed, and PREPAREs are not held): so the fields
 * set are those of any response, and the statement is counted with its code
 * (Aggregator.add's errors[str(code)] and the interval's `errors`), at most ACC_ERROR_CODES
 * codes per accumulator. Python's: a slow ERR (its sample carries the message), codes 0
 * and 0xFFFF (no error counted; MariaDB's progress report), an ERR that is not the end of
 * the segment, one after rows (mid result set), a further code.
 *
 * Conversation fields. A Conversation has no __dict__ (its fields are the __slots__ of
 * probe.mysql.state.ConnectionState): this file reads and writes the fields it needs at the
 * offsets of their member descriptors, through one small layer ("the conversation's
 * fields" below: CONV, conv_ll, conv_swap), found at attach, which raises TypeError for a
 * layout it cannot read. An empty slot declines the segment (Python's feed then raises).
 *
 * Exactness. The template held is the one the normalizer's skeleton cache holds (learnt
 * from it after Python normalized the same skeleton); the C cache is dropped whenever
 * normalizer.cache_resets moves, so a hit is a statement Python's cache would also have
 * hit (no side effect skipped). A replay after such a reset feeds the conversation with
 * a PinnedTemplate normalizer, so that Python's cache sees the same lookups as without the
 * fast path. An execute's template is its statement's, read from Python's own dict when
 * the request comes (see _cexecute.c for why nothing else changes). tests/probe/
 * test_cexchange.py compares both engines on generated conversations (events, aggregator,
 * conversation and normalizer state), tests/probe/test_cexecute.py each execute rule.
 *
 * Memory safety: payloads are read only within their size; counters are long long sums
 * of values below 2**32 per statement.
 */
#include "_cflows.h"

#include <structmember.h>
#include <string.h>

#define TO_SERVER 0
#define TO_CLIENT 1
#define COMMANDS_PHASE 4
#define COM_QUERY 3
#define COM_STMT_EXECUTE 0x17
#define MAX_PACKET 0xFFFFFF
#define MAX_PARTS 64 /* server segments one held response may span */
#define MAX_PARTS_BYTES (256 * 1024) /* and their bytes in all: beyond either, Python's */

static PyObject *s_max_query_bytes, *s_cache_resets, *s_by_skeleton, *s_slow_threshold_us, *s_normalizer, *s_feed2,
    *s_max_templates, *s_cache_size, *s_conv2;

/* -- small helpers ----------------------------------------------------------------------- */

/* A value (borrowed, may be NULL) as a long long into *out: 0, or -1 when absent or not an
 * exact int that fits (no error left set). */
static int as_ll(PyObject *value, long long *out) {
    if (value == NULL || !PyLong_CheckExact(value)) return -1;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

/* dict[name] as a long long: 0, or -1 when absent or not an exact int that fits. */
static int dict_ll(PyObject *dict, PyObject *name, long long *out) {
    PyObject *value = PyDict_GetItemWithError(dict, name);
    if (value == NULL) PyErr_Clear();
    return as_ll(value, out);
}

/* -- the conversation's fields ------------------------------------------------------------
 * Conversation has no __dict__: its fields are __slots__ of ConnectionState
 * (probe/mysql/state.py), and the classes between add none. fx_attach finds, once, the
 * offset of every field this file touches (conv_find_slots: each must be a writable
 * T_OBJECT_EX member descriptor of a class Conversation derives from, else attach raises
 * TypeError and the engine does not start with a layout it cannot read). CONV() is used
 * only on objects whose type is exactly Conversation (hold and complete check it first).
 *
 * An empty (NULL) slot: ConnectionState.__init__ sets every field, so a slot is empty only
 * on an object made without __init__ or after `del conv.field`. Every read below treats
 * NULL as "not the expected value" and declines the segment, so Python's feed runs instead
 * and raises the AttributeError it raises without the fast path. The fields written
 * (conv_swap) are all read first, except _c_packet_end, _s_last_ns and _server_ack, which
 * Python's feed assigns unconditionally: storing into an empty slot is what its assignment
 * does too. */
enum {
    CF_PHASE, CF_PENDING, CF_CAPS, CF_LIMITS, CF_PREPARED, CF_DEPRECATE_EOF, CF_SERVER, CF_DB, CF_USER,
    CF_C_OFF, CF_C_DESYNC, CF_C_INFLATE, CF_C_BUF, CF_C_PART, CF_C_SKIP, CF_C_PACKET_END,
    CF_S_OFF, CF_S_DESYNC, CF_S_INFLATE, CF_S_BUF, CF_S_SKIP, CF_S_CONT, CF_S_LAST_NS, CF_SERVER_ACK,
    CF_COUNT
};
static const char *const conv_field_names[CF_COUNT] = {
    "phase", "pending", "caps", "limits", "prepared", "deprecate_eof", "server", "db", "user",
    "_c_off", "_c_desync", "_c_inflate", "_c_buf", "_c_part", "_c_skip", "_c_packet_end",
    "_s_off", "_s_desync", "_s_inflate", "_s_buf", "_s_skip", "_s_cont", "_s_last_ns", "_server_ack",
};
static PyObject *s_conv_fields[CF_COUNT];
_Static_assert(CF_COUNT == CONV_FIELDS, "FastState.conv_slots holds one offset per field");

/* The field of conv (borrowed; NULL: empty). */
#define CONV(fx, conv, field) SLOT((conv), (fx)->conv_slots[(field)])

static int conv_ll(const FastState *fx, PyObject *conv, int field, long long *out) {
    return as_ll(CONV(fx, conv, field), out);
}

static int conv_empty_bytearray(const FastState *fx, PyObject *conv, int field) {
    PyObject *value = CONV(fx, conv, field);
    return value != NULL && PyByteArray_CheckExact(value) && PyByteArray_GET_SIZE(value) == 0;
}

/* Stores value (a reference the field takes over) and returns the field's old value (or
 * NULL) for the caller to release once all its stores are done: releasing an object may run
 * code, which must not see the conversation half-written. */
static PyObject *conv_swap(const FastState *fx, PyObject *conv, int field, PyObject *value) {
    PyObject *old = CONV(fx, conv, field);
    CONV(fx, conv, field) = value;
    return old;
}

/* Finds the offset of every field in fx->conv_slots; 0, or -1 with TypeError. */
static int conv_find_slots(FastState *fx) {
    for (int i = 0; i < CF_COUNT; i++)
        if (slot_offset(fx->conv_type, s_conv_fields[i], &fx->conv_slots[i]) < 0) return -1;
    return 0;
}

static unsigned long long fnv(const char *s, Py_ssize_t n) {
    unsigned long long h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static Py_ssize_t pow2_at_least(Py_ssize_t n) {
    Py_ssize_t cap = 16;
    while (cap < n) cap <<= 1;
    return cap;
}

/* -- the skeleton cache ------------------------------------------------------------------ */

static void skel_clear(FastState *fx) {
    for (Py_ssize_t i = 0; i < fx->skel_cap; i++) {
        SkelEntry *e = &fx->skel[i];
        if (e->text != NULL) {
            PyMem_Free(e->text);
            e->text = NULL;
            Py_CLEAR(e->template);
        }
    }
    fx->skel_used = 0;
}

/* Drops the cache when the normalizer's caches were cleared since it was filled. */
static void skel_check(FastState *fx) {
    long long resets;
    PyObject *dict = PyObject_GenericGetDict(fx->normalizer, NULL);
    if (dict == NULL) {
        PyErr_Clear();
        resets = -1;
    } else {
        if (dict_ll(dict, s_cache_resets, &resets) < 0) resets = -1;
        Py_DECREF(dict);
    }
    if (resets != fx->skel_resets || resets < 0) {
        skel_clear(fx);
        fx->skel_resets = resets;
    }
}

static SkelEntry *skel_slot(FastState *fx, unsigned long long hash, const char *s, Py_ssize_t len) {
    Py_ssize_t mask = fx->skel_cap - 1, i = (Py_ssize_t)(hash & (unsigned long long)mask);
    for (;; i = (i + 1) & mask) {
        SkelEntry *e = &fx->skel[i];
        if (e->text == NULL || (e->hash == hash && e->len == len && memcmp(e->text, s, len) == 0)) return e;
    }
}

/* -- Held: a request segment not fed yet --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* the InOrder */
    int active, has_ack, command; /* command: FX_QUERY, FX_EXECUTE */
    PyObject *ts, *payload, *template;
    long long ts_ns, ack, c_off, c_end, resets;
    PyObject *parts; /* server segments kept (RESP_MORE): [(ts, payload, ack or None)], or NULL */
    Resp resp;       /* what they added up to */
    long long first_ns, s_bytes; /* the first's time (Request.first_ns), their bytes */
} Held;

static PyTypeObject HeldType;

static void held_drop(Held *h) {
    h->active = 0;
    Py_CLEAR(h->ts);
    Py_CLEAR(h->payload);
    Py_CLEAR(h->template);
    Py_CLEAR(h->parts);
}

/* Feeds the server segments held after the request (parts) to conv, in order; 0 or -1. */
static int replay_parts(InOrder *io, PyObject *conv, PyObject *parts, PyObject *direction) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        PyObject *args[5] = {conv, PyTuple_GET_ITEM(part, 0), direction, PyTuple_GET_ITEM(part, 1),
                             PyTuple_GET_ITEM(part, 2)};
        PyObject *events = PyObject_VectorcallMethod(s_feed2, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        int rc = events == NULL ? -1 : inorder_emit(io, events);
        Py_XDECREF(events);
        if (rc < 0) return -1;
    }
    return 0;
}

/* Feeds the held segment to conv as Python would have when it came; 0 or -1. */
static int replay(Held *h, PyObject *conv) {
    InOrder *io = (InOrder *)h->owner;
    FastState *fx = &io->fx;
    PyObject *ts = h->ts, *payload = h->payload, *template = h->template, *parts = h->parts;
    h->ts = h->payload = h->template = h->parts = NULL;
    h->active = 0;
    fx->fast_replayed++;
    int rc = -1;
    PyObject *ack = NULL, *direction = NULL, *events = NULL, *saved = NULL;
    long long resets = -1;
    PyObject *ndict = PyObject_GenericGetDict(fx->normalizer, NULL);
    if (ndict == NULL) goto done;
    if (dict_ll(ndict, s_cache_resets, &resets) < 0) resets = -1;
    Py_DECREF(ndict);
    ack = h->has_ack ? PyLong_FromLongLong(h->ack) : Py_NewRef(Py_None);
    direction = PyLong_FromLong(TO_SERVER);
    if (ack == NULL || direction == NULL) goto done;
    if (h->command == FX_QUERY && resets != h->resets) {
        /* The normalizer's caches were cleared since: it must not see this statement as a
         * miss it never had (an execute does not use the normalizer). */
        PyObject *pinned = PyObject_CallOneArg(fx->pinned_type, template);
        if (pinned == NULL || (saved = PyObject_GetAttr(conv, s_normalizer)) == NULL ||
            PyObject_SetAttr(conv, s_normalizer, pinned) < 0) {
            Py_XDECREF(pinned);
            Py_CLEAR(saved);
            goto done;
        }
        Py_DECREF(pinned);
    }
    PyObject *args[5] = {conv, ts, direction, payload, ack};
    events = PyObject_VectorcallMethod(s_feed2, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (saved != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        int restored = PyObject_SetAttr(conv, s_normalizer, saved);
        if (restored < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            Py_CLEAR(events);
        } else {
            PyErr_Restore(type, value, tb);
        }
    }
    if (events != NULL && inorder_emit(io, events) == 0) {
        PyObject *to_client = parts == NULL ? NULL : PyLong_FromLong(TO_CLIENT);
        rc = parts == NULL ? 0 : to_client == NULL ? -1 : replay_parts(io, conv, parts, to_client);
        Py_XDECREF(to_client);
    }
done:
    Py_XDECREF(parts);
    Py_XDECREF(events);
    Py_XDECREF(saved);
    Py_XDECREF(ack);
    Py_XDECREF(direction);
    Py_XDECREF(ts);
    Py_XDECREF(payload);
    Py_XDECREF(template);
    return rc;
}

static PyObject *held_settle(Held *h, PyObject *conn) {
    if (!h->active) Py_RETURN_NONE;
    PyObject *conv = PyObject_GetAttr(conn, s_conv2);
    if (conv == NULL) return NULL;
    int rc = replay(h, conv);
    Py_DECREF(conv);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static int held_traverse(Held *h, visitproc visit, void *arg) {
    Py_VISIT(h->owner);
    Py_VISIT(h->ts);
    Py_VISIT(h->payload);
    Py_VISIT(h->template);
    Py_VISIT(h->parts);
    return 0;
}

static int held_clear(Held *h) {
    held_drop(h);
    Py_CLEAR(h->owner);
    return 0;
}

static void held_dealloc(Held *h) {
    PyObject_GC_UnTrack(h);
    held_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyMethodDef held_methods[] = {
    {"settle", (PyCFunction)held_settle, METH_O,
     "settle(conn): feed the held client segment to conn.conv now (nothing when none is held)."},
    {NULL},
};

static PyMemberDef held_members[] = {
    {"active", T_INT, offsetof(Held, active), READONLY, "a client segment is held"},
    {NULL},
};

static PyTypeObject HeldType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "probe._cflows.Held",
    .tp_basicsize = sizeof(Held),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A connection's COM_QUERY or COM_STMT_EXECUTE segment that InOrder has not fed to its conversation "
              "yet.",
    .tp_traverse = (traverseproc)held_traverse,
    .tp_clear = (inquiry)held_clear,
    .tp_dealloc = (destructor)held_dealloc,
    .tp_methods = held_methods,
    .tp_members = held_members,
};

/* -- the two halves of an exchange ------------------------------------------------------ */

/* The segment's time in ns: 0, or -1 (no error set) when it is not an int fitting a long long. */
static int time_ns(PyObject *ts, long long *ts_ns) {
    if (!PyLong_CheckExact(ts) || (*ts_ns = PyLong_AsLongLong(ts)) == -1) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

/* limits.max_query_bytes of a conversation's limits: 0, or -1 (no error set). The value of
 * the last limits object seen is kept with a strong reference to it: a ConversationLimits
 * is a frozen dataclass (its fields never change), and any other type is read every time. */
static int max_query_bytes(FastState *fx, PyObject *limits, long long *out) {
    if (limits == NULL) return -1;
    if (limits == fx->limits) {
        *out = fx->max_query;
        return 0;
    }
    PyObject *value = PyObject_GetAttr(limits, s_max_query_bytes);
    if (value == NULL) {
        PyErr_Clear();
        return -1;
    }
    int rc = as_ll(value, out);
    Py_DECREF(value);
    if (rc == 0 && (PyObject *)Py_TYPE(limits) == fx->limits_type) {
        Py_XSETREF(fx->limits, Py_NewRef(limits));
        fx->max_query = *out;
    }
    return rc;
}

/* The template of a COM_QUERY packet d[0:n] from the skeleton cache (a new reference), or
 * NULL (no error) on a miss: fx->learn is then set when its template is worth learning. */
static PyObject *query_template(FastState *fx, const unsigned char *d, const Py_ssize_t n) {
    if (fx->scratch_cap < n) {
        char *grown = PyMem_Realloc(fx->scratch, n);
        if (grown == NULL) {
            PyErr_Clear();
            return NULL;
        }
        fx->scratch = grown;
        fx->scratch_cap = n;
    }
    Py_ssize_t len = skeleton(d + 5, n - 5, fx->scratch);
    if (len < 0) return NULL;
    skel_check(fx);
    unsigned long long hash = fnv(fx->scratch, len);
    SkelEntry *e = skel_slot(fx, hash, fx->scratch, len);
    if (e->text == NULL) {
        fx->scratch_len = len;
        fx->learn = 1;
        return NULL;
    }
    return Py_NewRef(e->template);
}

/* A client segment: 1 held, 0 not (fx->learn set when its template is worth learning). It
 * holds one COM_QUERY or one COM_STMT_EXECUTE (its template from _cexecute.c). */
static int hold(InOrder *self, PyObject *conn, PyObject *conv, PyObject *ts, const unsigned char *d,
                const Py_ssize_t n, PyObject *payload, int has_ack, long long ack, Held *h) {
    FastState *fx = &self->fx;
    if ((PyObject *)Py_TYPE(conv) != fx->conv_type) return 0;
    if (n <= 5 || n >= MAX_PACKET || d[3] != 0 || le24(d) + 4 != n) return 0;
    const int command = d[4] == COM_QUERY ? FX_QUERY : d[4] == COM_STMT_EXECUTE ? FX_EXECUTE : -1;
    if (command < 0) return 0;
    long long ts_ns, phase, skip, caps, c_off, max_query;
    PyObject *template = NULL;
    if (time_ns(ts, &ts_ns) < 0) return 0;
    if (conv_ll(fx, conv, CF_PHASE, &phase) < 0 || phase != COMMANDS_PHASE || CONV(fx, conv, CF_C_DESYNC) != Py_False ||
        CONV(fx, conv, CF_C_INFLATE) != Py_None || !conv_empty_bytearray(fx, conv, CF_C_BUF) ||
        CONV(fx, conv, CF_C_PART) != Py_None || conv_ll(fx, conv, CF_C_SKIP, &skip) < 0 || skip != 0 ||
        conv_ll(fx, conv, CF_C_OFF, &c_off) < 0 || c_off >= (1LL << 62))
        return 0;
    PyObject *pending = CONV(fx, conv, CF_PENDING);
    if (pending == NULL || (PyObject *)Py_TYPE(pending) != fx->deque_type || Py_SIZE(pending) != 0) return 0;
    if (command == FX_QUERY) {
        /* Requests._command describes it inline only with capabilities known and no query
         * attributes, and keeps max_query_bytes of its text. */
        if (conv_ll(fx, conv, CF_CAPS, &caps) < 0 || (caps & fx->query_attributes) ||
            max_query_bytes(fx, CONV(fx, conv, CF_LIMITS), &max_query) < 0 || max_query < n - 4)
            return 0;
    } else if (!execute_template(fx, CONV(fx, conv, CF_PREPARED), d, n, &template)) {
        return 0;
    }
    if (command == FX_QUERY && (template = query_template(fx, d, n)) == NULL) return 0;
    /* The held segment owns its bytes: d may point into a capture buffer that is reused. */
    payload = payload != NULL ? Py_NewRef(payload) : PyBytes_FromStringAndSize((const char *)d, n);
    if (payload == NULL) {
        Py_DECREF(template);
        PyErr_Clear();
        return 0;
    }
    if (h == NULL) {
        h = PyObject_GC_New(Held, &HeldType);
        if (h == NULL) {
            Py_DECREF(payload);
            Py_DECREF(template);
            PyErr_Clear();
            return 0;
        }
        h->owner = Py_NewRef((PyObject *)self);
        h->active = 0;
        h->ts = h->payload = h->template = h->parts = NULL;
        PyObject_GC_Track(h);
        PyObject *old = SLOT(conn, self->conn_slots.held);
        SLOT(conn, self->conn_slots.held) = (PyObject *)h;
        Py_XDECREF(old); /* None */
    }
    h->ts = Py_NewRef(ts);
    h->payload = payload;
    h->template = template;
    h->command = command;
    h->ts_ns = ts_ns;
    h->has_ack = has_ack;
    h->ack = ack;
    h->c_off = c_off;
    h->c_end = c_off + n;
    h->resets = fx->skel_resets;
    h->first_ns = h->s_bytes = 0;
    h->resp = (Resp)RESP_INIT;
    h->active = 1;
    return 1;
}

/* Keeps a server segment that ended after a result with more to come (d[0:n], payload the
 * same bytes or NULL): 0, or -1 (no error set) when it cannot. */
static int keep_part(Held *h, PyObject *ts, const unsigned char *d, Py_ssize_t n, PyObject *payload, int has_ack,
                     long long ack) {
    if (h->parts == NULL && (h->parts = PyList_New(0)) == NULL) goto fail;
    if (PyList_GET_SIZE(h->parts) >= MAX_PARTS || h->s_bytes + n > MAX_PARTS_BYTES) return -1;
    payload = payload != NULL ? Py_NewRef(payload) : PyBytes_FromStringAndSize((const char *)d, n);
    PyObject *boxed = has_ack ? PyLong_FromLongLong(ack) : Py_NewRef(Py_None);
    PyObject *part = payload == NULL || boxed == NULL ? NULL : PyTuple_Pack(3, ts, payload, boxed);
    Py_XDECREF(payload);
    Py_XDECREF(boxed);
    int rc = part == NULL ? -1 : PyList_Append(h->parts, part);
    Py_XDECREF(part);
    if (rc == 0) return 0;
fail:
    PyErr_Clear();
    return -1;
}

/* The server segment after a held request, or after server segments held with it (a
 * response with more results to come): 1 completed or kept here, 0 not (nothing changed). */
static int complete(InOrder *self, Held *h, PyObject *conv, PyObject *ts, const unsigned char *d, const Py_ssize_t n,
                    PyObject *payload, int has_ack, long long ack) {
    FastState *fx = &self->fx;
    long long ts_ns, phase, skip, c_off, s_off, threshold;
    /* Python's "response to an unseen request", tested while the request has no first byte
     * of response yet (Request.first_ns). */
    if (has_ack && ack < h->c_end && h->first_ns == 0) return 0;
    if ((PyObject *)Py_TYPE(conv) != fx->conv_type || time_ns(ts, &ts_ns) < 0) return 0;
    PyObject *dep = CONV(fx, conv, CF_DEPRECATE_EOF), *server = CONV(fx, conv, CF_SERVER), *db = CONV(fx, conv, CF_DB),
             *user = CONV(fx, conv, CF_USER), *pending = CONV(fx, conv, CF_PENDING);
    int deprecate = dep == Py_True ? 1 : dep == Py_False ? 0 : dep == Py_None ? -1 : -2;
    if (deprecate == -2 || server == NULL || db == NULL || user == NULL || !PyUnicode_CheckExact(server) ||
        !PyUnicode_CheckExact(db) || !PyUnicode_CheckExact(user) || pending == NULL ||
        (PyObject *)Py_TYPE(pending) != fx->deque_type || Py_SIZE(pending) != 0)
        return 0;
    if (conv_ll(fx, conv, CF_PHASE, &phase) < 0 || phase != COMMANDS_PHASE || CONV(fx, conv, CF_S_DESYNC) != Py_False ||
        CONV(fx, conv, CF_S_INFLATE) != Py_None || !conv_empty_bytearray(fx, conv, CF_S_BUF) ||
        conv_ll(fx, conv, CF_S_SKIP, &skip) < 0 || skip != 0 || CONV(fx, conv, CF_S_CONT) != Py_False ||
        conv_ll(fx, conv, CF_C_OFF, &c_off) < 0 || c_off != h->c_off || conv_ll(fx, conv, CF_S_OFF, &s_off) < 0 ||
        s_off > (1LL << 62))
        return 0;
    Resp r = h->resp;
    const int got = parse_response(d, n, deprecate, &r);
    if (got == RESP_NONE) return 0;
    /* Request.first_ns: the time of the first server segment that is not 0 (_server_plain). */
    const long long first_ns = h->first_ns ? h->first_ns : ts_ns;
    if (got == RESP_MORE) {
        if (keep_part(h, ts, d, n, payload, has_ack, ack) < 0) return 0;
        h->resp = r;
        h->first_ns = first_ns;
        h->s_bytes += n;
        return 1;
    }
    long long latency = ts_ns > h->ts_ns ? (ts_ns - h->ts_ns) / 1000 : 0;
    long long ttfb = first_ns > h->ts_ns ? (first_ns - h->ts_ns) / 1000 : 0;
    PyObject *agg = PyObject_GenericGetDict(fx->aggregator, NULL);
    if (agg == NULL) {
        PyErr_Clear();
        return 0;
    }
    int known = dict_ll(agg, s_slow_threshold_us, &threshold) == 0;
    Py_DECREF(agg);
    if (!known || latency >= threshold || latency >= fx->key_table_len) return 0;
    Acc *a = acc_for(fx, server, db, user, PyTuple_GET_ITEM(h->template, 0), h->command);
    if (a == NULL) return 0;
    if (r.err_code && acc_error_slot(a, r.err_code) < 0) {
        fx->fast_error_codes_full++;
        return 0;
    }
    /* What the feeds would have left in the conversation (the acknowledgement: the last any
     * server segment carried): every new value is made before the first store, and the
     * old ones are released after the last. */
    int has_last_ack = has_ack;
    for (Py_ssize_t i = h->parts != NULL ? PyList_GET_SIZE(h->parts) : 0; !has_last_ack && i > 0; i--) {
        PyObject *held_ack = PyTuple_GET_ITEM(PyList_GET_ITEM(h->parts, i - 1), 2);
        if (held_ack != Py_None) {
            has_last_ack = 1;
            ack = PyLong_AsLongLong(held_ack); /* made from a long long */
        }
    }
    PyObject *c_end = PyLong_FromLongLong(h->c_end), *s_end = PyLong_FromLongLong(s_off + h->s_bytes + n),
             *acked = has_last_ack ? PyLong_FromLongLong(ack) : NULL;
    if (c_end == NULL || s_end == NULL || (has_last_ack && acked == NULL)) {
        Py_XDECREF(c_end);
        Py_XDECREF(s_end);
        Py_XDECREF(acked);
        return -1;
    }
    PyObject *old[6];
    int stored = 0;
    old[stored++] = conv_swap(fx, conv, CF_C_OFF, Py_NewRef(c_end));
    old[stored++] = conv_swap(fx, conv, CF_C_PACKET_END, c_end);
    old[stored++] = conv_swap(fx, conv, CF_S_OFF, s_end);
    old[stored++] = conv_swap(fx, conv, CF_S_LAST_NS, Py_NewRef(ts));
    if (has_last_ack) old[stored++] = conv_swap(fx, conv, CF_SERVER_ACK, acked);
    if (r.deprecate >= 0 && r.deprecate != deprecate)
        old[stored++] = conv_swap(fx, conv, CF_DEPRECATE_EOF, Py_NewRef(r.deprecate ? Py_True : Py_False));
    while (stored > 0) Py_XDECREF(old[--stored]);
    /* What Aggregator.add would have added. */
    if (acc_add(fx, a, h->ts_ns, ts_ns, latency, ttfb, h->c_end - h->c_off, h->s_bytes + n, &r) < 0) return -1;
    fx->fast_exchanges++;
    if (h->parts != NULL) fx->fast_multi_segments++;
    held_drop(h);
    return 1;
}

int fx_segment(InOrder *self, PyObject *conn, PyObject *conv, PyObject *ts, int direction, const unsigned char *d,
               Py_ssize_t n, PyObject *payload, int has_ack, long long ack) {
    FastState *fx = &self->fx;
    fx->learn = 0;
    if (!fx->enabled) return 0;
    PyObject *slot = SLOT(conn, self->conn_slots.held);
    if (slot != NULL && slot != Py_None && !Py_IS_TYPE(slot, &HeldType)) return 0;
    Held *h = slot != NULL && slot != Py_None ? (Held *)slot : NULL;
    if (h != NULL && h->active) {
        if (direction == TO_CLIENT) {
            int rc = complete(self, h, conv, ts, d, n, payload, has_ack, ack);
            if (rc != 0) return rc;
        }
        return replay(h, conv);
    }
    if (direction != TO_SERVER) return 0;
    return hold(self, conn, conv, ts, d, n, payload, has_ack, ack, h);
}

void fx_learn(InOrder *self) {
    FastState *fx = &self->fx;
    if (!fx->learn) return;
    fx->learn = 0;
    skel_check(fx);
    PyObject *ndict = PyObject_GenericGetDict(fx->normalizer, NULL);
    if (ndict == NULL) goto error;
    PyObject *cache = PyDict_GetItemWithError(ndict, s_by_skeleton);
    Py_DECREF(ndict); /* the cache stays referenced by the normalizer */
    if (cache == NULL || !PyDict_CheckExact(cache)) goto error;
    PyObject *text = PyUnicode_DecodeASCII(fx->scratch, fx->scratch_len, NULL);
    if (text == NULL) goto error;
    PyObject *template = PyDict_GetItemWithError(cache, text);
    Py_DECREF(text);
    if (template == NULL || !PyTuple_Check(template) || PyTuple_GET_SIZE(template) != 2 ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(template, 0)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(template, 1)))
        goto error;
    PyObject *use = PyUnicode_FromString("USE ");
    if (use == NULL) goto error;
    Py_ssize_t is_use = PyUnicode_Tailmatch(PyTuple_GET_ITEM(template, 1), use, 0, 4, -1);
    Py_DECREF(use);
    if (is_use != 0) goto error; /* a session effect: left to Python */
    if (fx->skel_used >= fx->skel_max) {
        skel_clear(fx);
        fx->fast_cache_resets++;
    }
    unsigned long long hash = fnv(fx->scratch, fx->scratch_len);
    SkelEntry *e = skel_slot(fx, hash, fx->scratch, fx->scratch_len);
    if (e->text != NULL) return;
    if ((e->text = PyMem_Malloc(fx->scratch_len + 1)) == NULL) goto error;
    memcpy(e->text, fx->scratch, fx->scratch_len);
    e->len = fx->scratch_len;
    e->hash = hash;
    e->template = Py_NewRef(template);
    fx->skel_used++;
    return;
error:
    PyErr_Clear();
}

/* -- attach, release ---------------------------------------------------------------------- */

static int import_attr(const char *module, const char *name, PyObject **out) {
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL) return -1;
    *out = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return *out == NULL ? -1 : 0;
}

static int attr_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

PyObject *fx_attach(InOrder *self, PyObject *aggregator) {
    FastState *fx = &self->fx;
    if (fx->enabled) {
        PyErr_SetString(PyExc_RuntimeError, "InOrder.attach: already attached");
        return NULL;
    }
    PyObject *table = NULL, *flag = NULL;
    long long max_templates, cache_size;
    if ((fx->normalizer = PyObject_GetAttr(self->flows, s_normalizer)) == NULL) goto fail;
    fx->aggregator = Py_NewRef(aggregator);
    if (import_attr("probe.mysql.conversation", "Conversation", &fx->conv_type) < 0 || conv_find_slots(fx) < 0 ||
        import_attr("probe.mysql.state", "ConversationLimits", &fx->limits_type) < 0 ||
        import_attr("collections", "deque", &fx->deque_type) < 0 ||
        import_attr("probe.flows", "PinnedTemplate", &fx->pinned_type) < 0 || execute_attach(fx) < 0 ||
        attr_ll(aggregator, s_max_templates, &max_templates) < 0 ||
        attr_ll(fx->normalizer, s_cache_size, &cache_size) < 0)
        goto fail;
    const char *flags[3] = {"CLIENT_QUERY_ATTRIBUTES", "SERVER_QUERY_NO_INDEX_USED", "SERVER_QUERY_NO_GOOD_INDEX_USED"};
    long long *values[3] = {&fx->query_attributes, &fx->no_index_flag, &fx->no_good_index_flag};
    for (int i = 0; i < 3; i++) {
        if (import_attr("probe.mysql.constants", flags[i], &flag) < 0) goto fail;
        *values[i] = PyLong_AsLongLong(flag);
        Py_CLEAR(flag);
        if (PyErr_Occurred()) goto fail;
    }
    if (import_attr("message.sketch", "_KEY_TABLE", &table) < 0) goto fail;
    if (!PyList_CheckExact(table)) {
        PyErr_SetString(PyExc_TypeError, "InOrder.attach: message.sketch._KEY_TABLE must be a list");
        goto fail;
    }
    fx->key_table_len = PyList_GET_SIZE(table);
    if ((fx->key_table = PyMem_Calloc(fx->key_table_len + 1, sizeof(int))) == NULL) goto fail;
    for (Py_ssize_t i = 0; i < fx->key_table_len; i++) {
        long key = PyLong_AsLong(PyList_GET_ITEM(table, i));
        if (key == -1 && PyErr_Occurred()) goto fail;
        if (key < -1000000 || key > 1000000) {
            PyErr_SetString(PyExc_ValueError, "InOrder.attach: implausible sketch key");
            goto fail;
        }
        fx->key_table[i] = (int)key;
    }
    Py_CLEAR(table);
    fx->skel_max = cache_size < 16 ? 16 : cache_size > (1 << 20) ? (1 << 20) : cache_size;
    fx->skel_cap = pow2_at_least(fx->skel_max * 2);
    fx->acc_max = max_templates < 16 ? 16 : max_templates > (1 << 20) ? (1 << 20) : max_templates;
    fx->acc_cap = pow2_at_least(fx->acc_max * 2);
    fx->skel = PyMem_Calloc(fx->skel_cap, sizeof(SkelEntry));
    fx->accs = PyMem_Calloc(fx->acc_cap, sizeof(Acc));
    if (fx->skel == NULL || fx->accs == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    fx->skel_resets = -1;
    fx->enabled = 1;
    Py_RETURN_NONE;
fail:
    Py_XDECREF(table);
    Py_XDECREF(flag);
    fx_release(fx);
    return NULL;
}

void fx_release(FastState *fx) {
    if (fx->skel != NULL) {
        skel_clear(fx);
        PyMem_Free(fx->skel);
        fx->skel = NULL;
    }
    if (fx->accs != NULL) {
        for (Py_ssize_t i = 0; i < fx->acc_cap; i++) acc_free(&fx->accs[i]);
        PyMem_Free(fx->accs);
        fx->accs = NULL;
    }
    PyMem_Free(fx->key_table);
    fx->key_table = NULL;
    PyMem_Free(fx->scratch);
    fx->scratch = NULL;
    fx->scratch_cap = 0;
    Py_CLEAR(fx->aggregator);
    Py_CLEAR(fx->normalizer);
    Py_CLEAR(fx->conv_type);
    Py_CLEAR(fx->limits_type);
    Py_CLEAR(fx->limits);
    Py_CLEAR(fx->deque_type);
    Py_CLEAR(fx->pinned_type);
    Py_CLEAR(fx->stmt_type);
    fx->enabled = 0;
}

int fx_traverse(FastState *fx, visitproc visit, void *arg) {
    Py_VISIT(fx->aggregator);
    Py_VISIT(fx->normalizer);
    Py_VISIT(fx->conv_type);
    Py_VISIT(fx->limits_type);
    Py_VISIT(fx->limits);
    Py_VISIT(fx->deque_type);
    Py_VISIT(fx->pinned_type);
    Py_VISIT(fx->stmt_type);
    for (Py_ssize_t i = 0; fx->skel != NULL && i < fx->skel_cap; i++) Py_VISIT(fx->skel[i].template);
    return 0;
}

int fx_module_init(PyObject *module) {
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    INTERN(s_max_query_bytes, "max_query_bytes");
    INTERN(s_cache_resets, "cache_resets");
    INTERN(s_by_skeleton, "_by_skeleton");
    INTERN(s_slow_threshold_us, "slow_threshold_us");
    INTERN(s_normalizer, "normalizer");
    INTERN(s_feed2, "feed");
    INTERN(s_max_templates, "max_templates");
    INTERN(s_cache_size, "cache_size");
    INTERN(s_conv2, "conv");
#undef INTERN
    for (int i = 0; i < CF_COUNT; i++)
        if ((s_conv_fields[i] = PyUnicode_InternFromString(conv_field_names[i])) == NULL) return -1;
    if (accs_module_init() < 0 || execute_module_init() < 0) return -1;
    if (PyModule_AddIntConstant(module, "ACC_ERROR_CODES", ACC_ERROR_CODES) < 0 || PyType_Ready(&HeldType) < 0)
        return -1;
    Py_INCREF(&HeldType);
    if (PyModule_AddObject(module, "Held", (PyObject *)&HeldType) < 0) {
        Py_DECREF(&HeldType);
        return -1;
    }
    return 0;
}
