/* probe._cflows: the in-order fast path of probe/flows.py's FlowTable.segment.
 *
 * Owns nothing of its own. InOrder(table) is a callable (ts_ns, seg) that the engine's batch
 * loops call instead of table.segment. It handles the common segment of an established
 * connection, and only that: no SYN, FIN or RST, the ACK flag set, a connection already in
 * table.table, not waiting for acknowledged bytes (conn.waiting is None), the peer's half
 * started and its acknowledgement not ahead of the bytes seen, and either no payload or a
 * payload that starts exactly at the half's next sequence number with nothing held out of
 * order. For that segment it does what FlowTable.segment does (tcp_segments += 1,
 * conn.last_ns = ts, the half's offset and next_seq moved on, conv.feed(ts, direction,
 * payload, ack_off), on_events(events) when there are events) and nothing else. Every
 * other segment, and any argument of an unexpected type, is passed unchanged to
 * table.segment before anything was changed: the pure code stays the specification
 * (MYSQLPROBE_NO_EXTENSIONS=1 runs it alone; tests/probe/test_cflows.py requires both to
 * give the same bytes, events, counters and state).
 *
 * The same entry for a segment given as C values (inorder_csegment: addresses, ports,
 * sequence numbers, flags and a pointer to the payload in the caller's buffer) is published
 * as the capsule probe._cflows._C_API (probe/_cflows_api.h): probe._cdecode's batch loop
 * calls it without building a Segment tuple or a payload bytes object, which are made only
 * for a segment that goes to Python (the fallback, conv.feed, a held COM_QUERY's copy).
 *
 * table.table, table.ports and table.server_ips are read once, at construction (FlowTable
 * never rebinds them); tcp_segments and on_events are slots of FlowTable, read (and the
 * count written) at each call at their offsets, found at construction on type(table) (a
 * table whose class shadows them is refused with TypeError). The fields of a Connection and
 * of a HalfStream are __slots__: they are read and written at the offsets of the slots'
 * member descriptors, found at construction and used only on objects whose type is exactly
 * probe.flows.Connection or probe.flows.HalfStream (anything else falls back).
 *
 * The C-valued entry keeps a small direct-mapped cache (KeyEntry, KEY_CACHE entries) from a
 * captured address/port 4-tuple to the int/bytes objects Python would build for it and to
 * the connection's own key tuple (Connection.key, the object table.table stores it under):
 * a segment of a known connection then builds no objects to be found, and the table lookup
 * matches by identity. The cache only saves work: the lookup is still made every time, so a
 * stale entry (the connection closed, a new one on the same 4-tuple) finds what Python finds.
 *
 * Memory safety: no pointer into a Python object is kept across calls (the cache holds
 * strong references); sequence numbers
 * are compared modulo 2**32 as flows.py's masks do; stream offsets are long long (a
 * stream would need 2**63 bytes to overflow one, and a value that does not fit falls back).
 */
#include "_cflows.h"
#include "_cflows_api.h"

#include <structmember.h>

/* probe/decode.py */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
/* probe/mysql/events.py */
#define TO_SERVER 0
#define TO_CLIENT 1

static PyObject *s_table, *s_ports, *s_server_ips, *s_segment, *s_waiting, *s_halves, *s_started, *s_fin,
    *s_offset, *s_next_seq, *s_ooo, *s_conv, *s_feed, *s_on_events, *s_tcp_segments, *s_last_ns, *s_held, *s_key;


/* A new reference to obj.name, NULL (error set) if missing. */
#define GET(obj, name) PyObject_GetAttr((obj), (name))

/* A value (borrowed, may be NULL) as a long long into *out: 0, or -1 when absent or not an
 * int that fits (error cleared: the caller falls back). */
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

/* Sets a slot of obj (an object of the slot's exact type) to a new int. */
static int set_slot_ll(PyObject *obj, Py_ssize_t offset, long long value) {
    PyObject *boxed = PyLong_FromLongLong(value);
    if (boxed == NULL) return -1;
    PyObject *old = SLOT(obj, offset);
    SLOT(obj, offset) = boxed;
    Py_XDECREF(old); /* an int: no code runs */
    return 0;
}

/* 1 when a slot holds True, 0 when False, -1 otherwise. */
static int slot_flag(PyObject *obj, Py_ssize_t offset) {
    PyObject *value = SLOT(obj, offset);
    return value == Py_True ? 1 : value == Py_False ? 0 : -1;
}

/* An exact int in [0, 2**32) from a tuple item, or -1. */
static long long u32_item(PyObject *item) {
    if (!PyLong_CheckExact(item)) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow || v < 0 || v > 0xFFFFFFFFLL) {
        PyErr_Clear();
        return -1;
    }
    return v;
}

/* Python's ((a - b + 2**31) & 0xFFFFFFFF) - 2**31 for a, b in [0, 2**32). */
static long long seq_diff(long long a, long long b) { return (long long)(int32_t)(uint32_t)(a - b); }

static int contains(PyObject *set, PyObject *item) {
    int rc = PySet_Contains(set, item);
    if (rc < 0) PyErr_Clear();
    return rc; /* -1: falls back, and Python raises its own error */
}

static PyObject *fall_back(InOrder *self, PyObject *const *args) {
    return PyObject_Vectorcall(self->fallback, args, 2, NULL);
}

/* The segment's fate: FAST (handled here, *fields filled) or SLOW (FlowTable.segment's). */
typedef struct {
    PyObject *conn, *half, *conv; /* new references when FAST */
    long long half_offset, half_next, ack_off;
    int direction, has_ack_off;
} Fast;

static void fast_clear(Fast *f) {
    Py_CLEAR(f->conn);
    Py_CLEAR(f->half);
    Py_CLEAR(f->conv);
}

/* 1: the in-order common case (f filled); 0: not it (nothing changed, no error set). The
 * segment's flags were checked by the caller (no SYN, FIN or RST; ACK set); src, dst,
 * sport and dport are what its tuple holds (borrowed), size its payload's length. e, when
 * not NULL, is the key-cache entry of these four objects: a key tuple it holds for the
 * same direction equals the one built here, and is the table's own key object, which the
 * dict lookup matches by identity instead of comparing tuples. */
static int classify(InOrder *self, PyObject *src, PyObject *dst, PyObject *sport, PyObject *dport, long long seq,
                    long long ack, Py_ssize_t size, Fast *f, KeyEntry *e) {
    int in;
    PyObject *key;
    if ((in = contains(self->ports, dport)) != 0 &&
        (self->server_ips == Py_None || (in = contains(self->server_ips, dst)) != 0)) {
        if (in < 0) return 0;
        f->direction = TO_SERVER;
        key = e != NULL && e->key != NULL && e->key_direction == TO_SERVER ? Py_NewRef(e->key)
                                                                         : PyTuple_Pack(4, src, sport, dst, dport);
    } else if (in >= 0 && (in = contains(self->ports, sport)) != 0 &&
               (self->server_ips == Py_None || (in = contains(self->server_ips, src)) != 0)) {
        if (in < 0) return 0;
        f->direction = TO_CLIENT;
        key = e != NULL && e->key != NULL && e->key_direction == TO_CLIENT ? Py_NewRef(e->key)
                                                                         : PyTuple_Pack(4, dst, dport, src, sport);
    } else {
        return 0; /* another port (counted there), or an error Python raises itself */
    }
    if (key == NULL) goto bad;
    PyObject *conn = PyDict_GetItemWithError(self->conns, key); /* borrowed */
    Py_DECREF(key);
    if (conn == NULL) goto bad;
    if ((PyObject *)Py_TYPE(conn) != self->conn_type) return 0;
    const ConnSlots *cs = &self->conn_slots;
    if (e != NULL) {
        /* conn was found under a key equal to ours: its own key object (the dict's). */
        PyObject *own = SLOT(conn, cs->key);
        if (own != NULL && own != e->key && PyTuple_CheckExact(own)) {
            Py_XSETREF(e->key, Py_NewRef(own));
            e->key_direction = f->direction;
        }
    }
    f->conn = Py_NewRef(conn);
    const HalfSlots *hs = &self->half_slots;

    if (SLOT(conn, cs->waiting) != Py_None) goto no;
    PyObject *halves = SLOT(conn, cs->halves);
    if (halves == NULL || !PyTuple_CheckExact(halves) || PyTuple_GET_SIZE(halves) != 2) goto no;
    PyObject *half = PyTuple_GET_ITEM(halves, f->direction), *other = PyTuple_GET_ITEM(halves, 1 - f->direction);
    if ((PyObject *)Py_TYPE(half) != self->half_type || (PyObject *)Py_TYPE(other) != self->half_type) goto no;
    f->half = Py_NewRef(half);
    other = Py_NewRef(other);

    /* The acknowledgement: the peer's half must have started and not be ahead of us. */
    int ok = 0;
    int started = slot_flag(other, hs->started), fin = slot_flag(other, hs->fin);
    if (started == 1 && fin == 0) {
        long long other_offset, other_next;
        if (as_ll(SLOT(other, hs->offset), &other_offset) == 0 && as_ll(SLOT(other, hs->next_seq), &other_next) == 0 &&
            other_next >= 0 && other_next <= 0xFFFFFFFFLL && other_offset > -(1LL << 62) &&
            other_offset < (1LL << 62)) {
            f->ack_off = other_offset + seq_diff(ack, other_next);
            f->has_ack_off = 1;
            ok = f->ack_off <= other_offset;
        }
    } else if (started == 1 && fin == 1) {
        f->has_ack_off = 0;
        ok = 1;
    }
    Py_DECREF(other);
    if (!ok) goto no;

    if (size == 0) return 1;
    /* In order, nothing held. */
    if (slot_flag(half, hs->started) != 1) goto no;
    if (as_ll(SLOT(half, hs->next_seq), &f->half_next) != 0 || f->half_next != seq) goto no;
    if (as_ll(SLOT(half, hs->offset), &f->half_offset) != 0) goto no;
    PyObject *ooo = SLOT(half, hs->ooo);
    if (ooo == NULL || !PyDict_CheckExact(ooo) || PyDict_GET_SIZE(ooo) != 0) goto no;
    if (f->half_offset > LLONG_MAX - size) goto no;
    f->conv = SLOT(conn, cs->conv);
    if (f->conv == NULL) goto no;
    Py_INCREF(f->conv);
    return 1;
bad:
    PyErr_Clear();
no:
    fast_clear(f);
    return 0;
}

int inorder_emit(InOrder *self, PyObject *events) {
    int truth = PyObject_IsTrue(events);
    if (truth <= 0) return truth;
    PyObject *on_events = SLOT(self->flows, self->on_events_slot);
    /* An empty slot: getattr raises the AttributeError Python's call would. */
    on_events = on_events != NULL ? Py_NewRef(on_events) : GET(self->flows, s_on_events);
    if (on_events == NULL) return -1;
    PyObject *ret = PyObject_CallOneArg(on_events, events);
    Py_DECREF(on_events);
    if (ret == NULL) return -1;
    Py_DECREF(ret);
    return 0;
}

/* What FlowTable.segment does for a classified segment (f) whose payload is d[0:size]
 * (payload: the same bytes as an object, or NULL when there is none yet: one is made if
 * the conversation must see it). 1: done; 0: declined before changing anything; -1: error. */
static int advance(InOrder *self, Fast *f, PyObject *ts, const unsigned char *d, Py_ssize_t size,
                   PyObject *payload) {
    long long segments;
    if (as_ll(SLOT(self->flows, self->tcp_segments_slot), &segments) != 0 || segments == LLONG_MAX)
        return 0; /* not an int (or empty): Python's += decides */
    if (set_slot_ll(self->flows, self->tcp_segments_slot, segments + 1) < 0) return -1;
    PyObject *old_ns = SLOT(f->conn, self->conn_slots.last_ns);
    SLOT(f->conn, self->conn_slots.last_ns) = Py_NewRef(ts);
    Py_XDECREF(old_ns); /* an int: no code runs */
    if (size == 0) return 1;
    if (set_slot_ll(f->half, self->half_slots.offset, f->half_offset + size) < 0) return -1;
    if (set_slot_ll(f->half, self->half_slots.next_seq, (f->half_next + size) & 0xFFFFFFFFLL) < 0) return -1;
    int fast = fx_segment(self, f->conn, f->conv, ts, f->direction, d, size, payload, f->has_ack_off, f->ack_off);
    if (fast != 0) return fast;
    int rc = -1;
    PyObject *events = NULL, *ack_off = NULL, *direction = PyLong_FromLong(f->direction);
    if (direction == NULL) goto done;
    ack_off = f->has_ack_off ? PyLong_FromLongLong(f->ack_off) : Py_NewRef(Py_None);
    if (ack_off == NULL) goto done;
    if (payload == NULL) {
        if ((payload = PyBytes_FromStringAndSize((const char *)d, size)) == NULL) goto done;
    } else {
        Py_INCREF(payload);
    }
    PyObject *call[5] = {f->conv, ts, direction, payload, ack_off};
    events = PyObject_VectorcallMethod(s_feed, call, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(payload);
    if (events == NULL) goto done;
    fx_learn(self);
    if (inorder_emit(self, events) < 0) goto done;
    rc = 1;
done:
    Py_XDECREF(direction);
    Py_XDECREF(ack_off);
    Py_XDECREF(events);
    return rc;
}

static int flags_fit(long flags) { return !(flags & (TCP_SYN | TCP_FIN | TCP_RST)) && (flags & TCP_ACK); }

static PyObject *inorder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    InOrder *self = (InOrder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0))
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    PyObject *ts = args[0], *seg = args[1];
    if (!PyLong_CheckExact(ts) || !PyTuple_CheckExact(seg) || PyTuple_GET_SIZE(seg) != 8) return fall_back(self, args);
    PyObject *payload = PyTuple_GET_ITEM(seg, 7);
    if (!PyLong_CheckExact(PyTuple_GET_ITEM(seg, 6)) || !PyBytes_CheckExact(payload)) return fall_back(self, args);
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(seg, 6));
    if (flags == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return fall_back(self, args);
    }
    if (!flags_fit(flags)) return fall_back(self, args);
    long long seq = u32_item(PyTuple_GET_ITEM(seg, 4)), ack = u32_item(PyTuple_GET_ITEM(seg, 5));
    if (seq < 0 || ack < 0) return fall_back(self, args);
    Fast f = {NULL, NULL, NULL, 0, 0, 0, 0, 0};
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    if (!classify(self, PyTuple_GET_ITEM(seg, 0), PyTuple_GET_ITEM(seg, 1), PyTuple_GET_ITEM(seg, 2),
                  PyTuple_GET_ITEM(seg, 3), seq, ack, size, &f, NULL))
        return fall_back(self, args);
    int rc = advance(self, &f, ts, (const unsigned char *)PyBytes_AS_STRING(payload), size, payload);
    fast_clear(&f);
    if (rc == 0) return fall_back(self, args);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

/* -- the capsule: the same for a segment given as C values (probe._cdecode's batch loop) -- */

static PyObject *address(int v6, uint32_t v4, const unsigned char *a) {
    return v6 ? PyBytes_FromStringAndSize((const char *)a, 16) : PyLong_FromUnsignedLong(v4);
}

static void key_entry_clear(KeyEntry *e) {
    Py_CLEAR(e->src);
    Py_CLEAR(e->dst);
    Py_CLEAR(e->sp);
    Py_CLEAR(e->dp);
    Py_CLEAR(e->key);
    e->used = 0;
}

static unsigned mix16(const unsigned char *a) {
    uint32_t h = 0;
    for (int i = 0; i < 16; i += 4) h = (h ^ ((uint32_t)a[i] | (uint32_t)a[i + 1] << 8 | (uint32_t)a[i + 2] << 16 |
                                               (uint32_t)a[i + 3] << 24)) * 2654435761u;
    return h;
}

/* The cache entry of a segment's 4-tuple, filled with its objects (made here on a miss):
 * NULL with an error set when they could not be made. */
static KeyEntry *key_entry(InOrder *self, const CSegment *s) {
    if (self->keys == NULL && (self->keys = PyMem_Calloc(KEY_CACHE, sizeof(KeyEntry))) == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    uint32_t h = s->v6 ? mix16(s->src6) ^ mix16(s->dst6) * 31u : s->src4 * 2654435761u ^ s->dst4 * 40503u;
    h = (h ^ ((uint32_t)s->sport << 16 | s->dport)) * 2246822519u;
    KeyEntry *e = &self->keys[(h ^ h >> 15) & (KEY_CACHE - 1)];
    if (e->used && e->v6 == s->v6 && e->sport == s->sport && e->dport == s->dport &&
        (s->v6 ? memcmp(e->src6, s->src6, 16) == 0 && memcmp(e->dst6, s->dst6, 16) == 0
               : e->src4 == s->src4 && e->dst4 == s->dst4))
        return e;
    key_entry_clear(e);
    e->src = address(s->v6, s->src4, s->src6);
    e->dst = address(s->v6, s->dst4, s->dst6);
    e->sp = PyLong_FromUnsignedLong(s->sport);
    e->dp = PyLong_FromUnsignedLong(s->dport);
    if (e->src == NULL || e->dst == NULL || e->sp == NULL || e->dp == NULL) {
        key_entry_clear(e);
        return NULL;
    }
    e->v6 = s->v6;
    e->src4 = s->src4;
    e->dst4 = s->dst4;
    if (s->v6) {
        memcpy(e->src6, s->src6, 16);
        memcpy(e->dst6, s->dst6, 16);
    }
    e->sport = s->sport;
    e->dport = s->dport;
    e->used = 1;
    return e;
}

static int inorder_csegment(PyObject *callable, long long ts_ns, const CSegment *s) {
    InOrder *self = (InOrder *)callable;
    if (!flags_fit((long)s->flags)) return 0;
    int rc = -1;
    Fast f = {NULL, NULL, NULL, 0, 0, 0, 0, 0};
    KeyEntry *e = key_entry(self, s);
    if (e == NULL) return -1;
    /* New references: the entry may be replaced while Python code runs below. */
    PyObject *src = Py_NewRef(e->src), *dst = Py_NewRef(e->dst), *sport = Py_NewRef(e->sp),
             *dport = Py_NewRef(e->dp);
    rc = classify(self, src, dst, sport, dport, s->seq, s->ack, s->len, &f, e);
    if (rc == 0) goto done;
    PyObject *ts = PyLong_FromLongLong(ts_ns);
    if (ts == NULL) {
        rc = -1;
        goto done;
    }
    rc = advance(self, &f, ts, s->data, s->len, NULL);
    Py_DECREF(ts);
done:
    fast_clear(&f);
    Py_XDECREF(src);
    Py_XDECREF(dst);
    Py_XDECREF(sport);
    Py_XDECREF(dport);
    return rc;
}

static PyObject *inorder_fallback(PyObject *callable) { return ((InOrder *)callable)->fallback; }

/* The offset of the __slots__ member `name` of class `cls` (a writable object slot). */
int slot_offset(PyObject *cls, PyObject *name, Py_ssize_t *out) {
    /* Looked up along the MRO: a subclass's slots are declared by its bases. */
    PyObject *descr = _PyType_Lookup((PyTypeObject *)cls, name); /* borrowed */
    if (descr == NULL) {
        PyErr_Format(PyExc_TypeError, "InOrder: %R has no slot %R", cls, name);
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || !PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(descr))) {
        PyErr_Format(PyExc_TypeError, "InOrder: %R.%U is not a slot", cls, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY) || member->offset < (Py_ssize_t)sizeof(PyObject) ||
        member->offset > ((PyTypeObject *)cls)->tp_basicsize - (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_Format(PyExc_TypeError, "InOrder: %R.%U is not a writable object slot", cls, name);
        return -1;
    }
    *out = member->offset;
    return 0;
}

static int find_slots(InOrder *self) {
    PyObject *module = PyImport_ImportModule("probe.flows");
    if (module == NULL) return -1;
    self->conn_type = PyObject_GetAttrString(module, "Connection");
    self->half_type = PyObject_GetAttrString(module, "HalfStream");
    Py_DECREF(module);
    if (self->conn_type == NULL || self->half_type == NULL) return -1;
    if (!PyType_Check(self->conn_type) || !PyType_Check(self->half_type)) {
        PyErr_SetString(PyExc_TypeError, "InOrder: probe.flows.Connection and HalfStream must be classes");
        return -1;
    }
    ConnSlots *c = &self->conn_slots;
    HalfSlots *h = &self->half_slots;
    PyObject *conn = self->conn_type, *half = self->half_type;
    if (slot_offset(conn, s_waiting, &c->waiting) < 0 || slot_offset(conn, s_halves, &c->halves) < 0 ||
        slot_offset(conn, s_conv, &c->conv) < 0 || slot_offset(conn, s_last_ns, &c->last_ns) < 0 ||
        slot_offset(conn, s_held, &c->held) < 0 || slot_offset(conn, s_key, &c->key) < 0 ||
        slot_offset(half, s_started, &h->started) < 0 || slot_offset(half, s_next_seq, &h->next_seq) < 0 ||
        slot_offset(half, s_offset, &h->offset) < 0 || slot_offset(half, s_fin, &h->fin) < 0 ||
        slot_offset(half, s_ooo, &h->ooo) < 0)
        return -1;
    return 0;
}

static PyObject *inorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *flows;
    static char *names[] = {"flows", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:InOrder", names, &flows)) return NULL;
    InOrder *self = (InOrder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = inorder_vectorcall;
    self->flows = Py_NewRef(flows);
    if ((self->conns = GET(flows, s_table)) == NULL || (self->ports = GET(flows, s_ports)) == NULL ||
        (self->server_ips = GET(flows, s_server_ips)) == NULL || (self->fallback = GET(flows, s_segment)) == NULL ||
        find_slots(self) < 0 || slot_offset((PyObject *)Py_TYPE(flows), s_tcp_segments, &self->tcp_segments_slot) < 0 ||
        slot_offset((PyObject *)Py_TYPE(flows), s_on_events, &self->on_events_slot) < 0)
        goto fail;
    if (!PyDict_CheckExact(self->conns)) {
        PyErr_SetString(PyExc_TypeError, "InOrder: flows.table must be a dict");
        goto fail;
    }
    if (!PyAnySet_Check(self->ports) || (self->server_ips != Py_None && !PyAnySet_Check(self->server_ips))) {
        PyErr_SetString(PyExc_TypeError, "InOrder: flows.ports and flows.server_ips must be sets");
        goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int inorder_traverse(InOrder *self, visitproc visit, void *arg) {
    if (self->keys != NULL)
        for (int i = 0; i < KEY_CACHE; i++) Py_VISIT(self->keys[i].key);
    Py_VISIT(self->flows);
    Py_VISIT(self->conns);
    Py_VISIT(self->ports);
    Py_VISIT(self->server_ips);
    Py_VISIT(self->fallback);
    Py_VISIT(self->conn_type);
    Py_VISIT(self->half_type);
    return fx_traverse(&self->fx, visit, arg);
}

static int inorder_clear(InOrder *self) {
    Py_CLEAR(self->flows);
    Py_CLEAR(self->conns);
    Py_CLEAR(self->ports);
    Py_CLEAR(self->server_ips);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->conn_type);
    Py_CLEAR(self->half_type);
    if (self->keys != NULL) {
        for (int i = 0; i < KEY_CACHE; i++) key_entry_clear(&self->keys[i]);
        PyMem_Free(self->keys);
        self->keys = NULL;
    }
    fx_release(&self->fx);
    return 0;
}

static void inorder_dealloc(InOrder *self) {
    PyObject_GC_UnTrack(self);
    inorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *assumed_constants(PyObject *module, PyObject *unused) {
    return Py_BuildValue("{sisisisisisi}", "TCP_FIN", TCP_FIN, "TCP_SYN", TCP_SYN, "TCP_RST", TCP_RST, "TCP_ACK",
                         TCP_ACK, "TO_SERVER", TO_SERVER, "TO_CLIENT", TO_CLIENT);
}

static PyMemberDef inorder_members[] = {
    {"flows", T_OBJECT, offsetof(InOrder, flows), READONLY, "the FlowTable"},
    {"fast_exchanges", T_LONGLONG, offsetof(InOrder, fx.fast_exchanges), READONLY,
     "COM_QUERY and COM_STMT_EXECUTE exchanges completed in C (probe/_cexchange.c)"},
    {"fast_replayed", T_LONGLONG, offsetof(InOrder, fx.fast_replayed), READONLY,
     "held COM_QUERY and COM_STMT_EXECUTE segments fed to Python after all"},
    {"fast_cache_resets", T_LONGLONG, offsetof(InOrder, fx.fast_cache_resets), READONLY,
     "times the skeleton cache was full and cleared"},
    {"fast_accs_full", T_LONGLONG, offsetof(InOrder, fx.fast_accs_full), READONLY,
     "exchanges left to Python because the accumulator table was full"},
    {"fast_error_codes_full", T_LONGLONG, offsetof(InOrder, fx.fast_error_codes_full), READONLY,
     "ERR exchanges left to Python because their accumulator counted ACC_ERROR_CODES other codes"},
    {"fast_multi_segments", T_LONGLONG, offsetof(InOrder, fx.fast_multi_segments), READONLY,
     "fast_exchanges whose response came in several server segments (results of a CALL)"},
    {NULL},
};

static PyObject *inorder_attach(InOrder *self, PyObject *aggregator) { return fx_attach(self, aggregator); }
static PyObject *inorder_fold(InOrder *self, PyObject *unused) { return fx_fold(self); }

static PyMethodDef inorder_methods[] = {
    {"attach", (PyCFunction)inorder_attach, METH_O,
     "attach(aggregator): complete ordinary COM_QUERY and COM_STMT_EXECUTE exchanges in C, counted for this "
     "aggregator."},
    {"fold", (PyCFunction)inorder_fold, METH_NOARGS,
     "The statements counted in C since the last fold, as rows for Aggregator.fold (then forgotten)."},
    {NULL},
};

static PyTypeObject InOrderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "probe._cflows.InOrder",
    .tp_basicsize = sizeof(InOrder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "InOrder(flows)(ts_ns, seg): FlowTable.segment with its in-order common case compiled.",
    .tp_new = inorder_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(InOrder, vectorcall),
    .tp_traverse = (traverseproc)inorder_traverse,
    .tp_clear = (inquiry)inorder_clear,
    .tp_dealloc = (destructor)inorder_dealloc,
    .tp_members = inorder_members,
    .tp_methods = inorder_methods,
};

static PyMethodDef module_methods[] = {
    {"assumed_constants", assumed_constants, METH_NOARGS, "The flag and direction values this module assumes."},
    {"skeleton", fx_skeleton, METH_O, "The literal skeleton of SQL bytes, or None when the fast path declines it."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    INTERN(s_table, "table");
    INTERN(s_ports, "ports");
    INTERN(s_server_ips, "server_ips");
    INTERN(s_segment, "segment");
    INTERN(s_waiting, "waiting");
    INTERN(s_halves, "halves");
    INTERN(s_started, "started");
    INTERN(s_fin, "fin");
    INTERN(s_offset, "offset");
    INTERN(s_next_seq, "next_seq");
    INTERN(s_ooo, "ooo");
    INTERN(s_conv, "conv");
    INTERN(s_feed, "feed");
    INTERN(s_on_events, "on_events");
    INTERN(s_tcp_segments, "tcp_segments");
    INTERN(s_last_ns, "last_ns");
    INTERN(s_held, "held");
    INTERN(s_key, "key");
#undef INTERN
    if (fx_module_init(module) < 0) return -1;
    if (PyType_Ready(&InOrderType) < 0) return -1;
    Py_INCREF(&InOrderType);
    if (PyModule_AddObject(module, "InOrder", (PyObject *)&InOrderType) < 0) {
        Py_DECREF(&InOrderType);
        return -1;
    }
    static CflowsApi api = {CFLOWS_API_VERSION, &InOrderType, inorder_csegment, inorder_fallback};
    PyObject *capsule = PyCapsule_New(&api, CFLOWS_CAPSULE, NULL);
    if (capsule == NULL) return -1;
    int rc = PyModule_AddObjectRef(module, "_C_API", capsule);
    Py_DECREF(capsule);
    return rc;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "probe._cflows",
    .m_doc = "The in-order fast path of probe.flows.FlowTable.segment (see probe/_cflows.c).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__cflows(void) { return PyModuleDef_Init(&module_def); }
