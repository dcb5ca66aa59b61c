/* probe._cdecode: the compiled frame decoder and batch loop (see probe/native.py).
 *
 * Owns nothing of its own: it computes exactly what probe.decode.make_decoder's function
 * and probe.decode.decode_batch compute (the pure-Python oracle, tested equal in
 * tests/probe/test_native.py), without a Python object per frame in the batch loop.
 *
 * Memory safety: every read of frame bytes goes through a check against the frame's
 * length first (need()); the batch loop clamps each frame to the buffer as Python
 * slicing does; lengths are Py_ssize_t sums of values below 2**32, so nothing overflows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_cflows_api.h"

#define LINKTYPE_NULL 0
#define LINKTYPE_ETHERNET 1
#define LINKTYPE_RAW_BSD 12
#define LINKTYPE_RAW_OPENBSD 14
#define LINKTYPE_RAW 101
#define LINKTYPE_LOOP 108
#define LINKTYPE_LINUX_SLL 113
#define LINKTYPE_IPV4 228
#define LINKTYPE_IPV6 229
#define LINKTYPE_LINUX_SLL2 276

/* What decoding one frame gave. */
enum outcome { SEGMENT, NON_IP, NON_TCP, IP_FRAGMENT, TRUNCATED };

typedef struct {
    PyObject_HEAD
    int linktype;
    PyObject *counters; /* a DecodeCounters: its attributes are incremented */
} Decoder;

static PyObject *counter_names[5]; /* interned attribute names, by outcome */
/* probe._cflows's capsule (NULL: not loaded, every segment goes through a Python call). */
static const CflowsApi *cflows;

static inline unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A decoded segment before it becomes a tuple: offsets into the frame, never pointers
 * past its end. */
typedef struct {
    int v6;
    uint32_t src4, dst4;
    Py_ssize_t src6, dst6; /* offsets of 16-byte IPv6 addresses */
    unsigned sport, dport;
    uint32_t seq, ack;
    unsigned flags;
    Py_ssize_t data, end; /* payload = frame[data:end] with Python slice semantics */
} Parsed;

/* The IP layer at off: the pure decoder's ip() step by step, checking before each read
 * the length Python would have found missing (an IndexError or struct.error there). */
static enum outcome parse_ip(const unsigned char *f, Py_ssize_t n, Py_ssize_t off, Parsed *out) {
    Py_ssize_t t;
    if (off >= n) return TRUNCATED;
    unsigned version = f[off] >> 4;
    if (version == 4) {
        Py_ssize_t ihl = (Py_ssize_t)(f[off] & 0x0F) << 2;
        if (off + 9 >= n) return TRUNCATED;
        if (f[off + 9] != 6) return NON_TCP;
        if (be16(f + off + 6) & 0x3FFF) return IP_FRAGMENT;
        unsigned total = be16(f + off + 2);
        out->end = total ? off + (Py_ssize_t)total : n;
        if (off + 20 > n) return TRUNCATED;
        out->v6 = 0;
        out->src4 = be32(f + off + 12);
        out->dst4 = be32(f + off + 16);
        t = off + ihl;
    } else if (version == 6) {
        if (off + 6 >= n) return TRUNCATED;
        unsigned nxt = f[off + 6];
        out->end = off + 40 + (Py_ssize_t)be16(f + off + 4);
        out->v6 = 1;
        out->src6 = off + 8;
        out->dst6 = off + 24;
        t = off + 40;
        while (nxt != 6) {
            if (nxt == 0 || nxt == 43 || nxt == 60) {
                if (t + 1 >= n) return TRUNCATED;
                nxt = f[t];
                t += ((Py_ssize_t)f[t + 1] + 1) << 3;
            } else if (nxt == 44) {
                return IP_FRAGMENT;
            } else {
                return NON_TCP;
            }
        }
    } else {
        return NON_IP;
    }
    /* TCP: ports, sequence, acknowledgement (12 bytes), data offset and flags (2 more).
     * A returned IPv6 segment has t >= off + 40, so its addresses are inside the frame. */
    if (t + 14 > n) return TRUNCATED;
    out->sport = be16(f + t);
    out->dport = be16(f + t + 2);
    out->seq = be32(f + t + 4);
    out->ack = be32(f + t + 8);
    out->flags = f[t + 13];
    out->data = t + ((Py_ssize_t)(f[t + 12] >> 4) << 2);
    if (out->end > n) out->end = n;
    return SEGMENT;
}

static enum outcome parse_frame(int linktype, const unsigned char *f, Py_ssize_t n, Parsed *out) {
    switch (linktype) {
    case LINKTYPE_ETHERNET: {
        if (n >= 54) {
            unsigned frag = be16(f + 20);
            if (be16(f + 12) == 0x0800 && f[14] == 0x45 && f[23] == 6 && !(frag & 0x3FFF)) {
                unsigned total = be16(f + 16);
                out->v6 = 0;
                out->src4 = be32(f + 26);
                out->dst4 = be32(f + 30);
                out->sport = be16(f + 34);
                out->dport = be16(f + 36);
                out->seq = be32(f + 38);
                out->ack = be32(f + 42);
                out->flags = f[47];
                out->data = 34 + ((Py_ssize_t)(f[46] >> 4) << 2);
                out->end = total ? 14 + (Py_ssize_t)total : n;
                if (out->end > n) out->end = n;
                return SEGMENT;
            }
        }
        if (n < 14) return TRUNCATED;
        unsigned ethertype = be16(f + 12);
        Py_ssize_t off = 14;
        while (ethertype == 0x8100 || ethertype == 0x88A8 || ethertype == 0x9100) {
            if (n < off + 4) return TRUNCATED;
            ethertype = be16(f + off + 2);
            off += 4;
        }
        if (ethertype == 0x0800 || ethertype == 0x86DD) return parse_ip(f, n, off, out);
        return NON_IP;
    }
    case LINKTYPE_LINUX_SLL:
    case LINKTYPE_LINUX_SLL2: {
        Py_ssize_t proto_at = linktype == LINKTYPE_LINUX_SLL ? 14 : 0;
        Py_ssize_t off = linktype == LINKTYPE_LINUX_SLL ? 16 : 20;
        if (n < off) return TRUNCATED;
        unsigned proto = be16(f + proto_at);
        if (proto == 0x0800 || proto == 0x86DD) return parse_ip(f, n, off, out);
        return NON_IP;
    }
    case LINKTYPE_NULL:
    case LINKTYPE_LOOP:
        if (n < 5) return TRUNCATED;
        return parse_ip(f, n, 4, out);
    default: /* the raw IP link types: the constructor admits no others */
        if (n < 1) return TRUNCATED;
        return parse_ip(f, n, 0, out);
    }
}

static PyObject *segment_tuple(const unsigned char *f, const Parsed *s) {
    PyObject *src, *dst;
    if (s->v6) {
        src = PyBytes_FromStringAndSize((const char *)f + s->src6, 16);
        dst = PyBytes_FromStringAndSize((const char *)f + s->dst6, 16);
    } else {
        src = PyLong_FromUnsignedLong(s->src4);
        dst = PyLong_FromUnsignedLong(s->dst4);
    }
    Py_ssize_t len = s->end > s->data ? s->end - s->data : 0;
    PyObject *payload = PyBytes_FromStringAndSize(len ? (const char *)f + s->data : "", len);
    PyObject *sport = PyLong_FromUnsignedLong(s->sport);
    PyObject *dport = PyLong_FromUnsignedLong(s->dport);
    PyObject *seq = PyLong_FromUnsignedLong(s->seq);
    PyObject *ack = PyLong_FromUnsignedLong(s->ack);
    PyObject *flags = PyLong_FromUnsignedLong(s->flags);
    if (!src || !dst || !payload || !sport || !dport || !seq || !ack || !flags) {
        Py_XDECREF(src);
        Py_XDECREF(dst);
        Py_XDECREF(payload);
        Py_XDECREF(sport);
        Py_XDECREF(dport);
        Py_XDECREF(seq);
        Py_XDECREF(ack);
        Py_XDECREF(flags);
        return NULL;
    }
    PyObject *tuple = PyTuple_New(8);
    if (!tuple) {
        Py_DECREF(src);
        Py_DECREF(dst);
        Py_DECREF(payload);
        Py_DECREF(sport);
        Py_DECREF(dport);
        Py_DECREF(seq);
        Py_DECREF(ack);
        Py_DECREF(flags);
        return NULL;
    }
    PyTuple_SET_ITEM(tuple, 0, src); /* steals the references */
    PyTuple_SET_ITEM(tuple, 1, dst);
    PyTuple_SET_ITEM(tuple, 2, sport);
    PyTuple_SET_ITEM(tuple, 3, dport);
    PyTuple_SET_ITEM(tuple, 4, seq);
    PyTuple_SET_ITEM(tuple, 5, ack);
    PyTuple_SET_ITEM(tuple, 6, flags);
    PyTuple_SET_ITEM(tuple, 7, payload);
    return tuple;
}

/* counters.<name> += 1 for a frame that was no segment (the uncommon path). */
static int count(Decoder *self, enum outcome what) {
    PyObject *name = counter_names[what];
    if (!self->counters) { /* Decoder.__new__ without __init__ */
        PyErr_SetString(PyExc_RuntimeError, "Decoder was not initialised");
        return -1;
    }
    PyObject *value = PyObject_GetAttr(self->counters, name);
    if (!value) return -1;
    PyObject *one = PyLong_FromLong(1);
    if (!one) {
        Py_DECREF(value);
        return -1;
    }
    PyObject *next = PyNumber_Add(value, one);
    Py_DECREF(value);
    Py_DECREF(one);
    if (!next) return -1;
    int rc = PyObject_SetAttr(self->counters, name, next);
    Py_DECREF(next);
    return rc;
}

/* One frame: a new reference to the segment tuple, Py_None (new reference), or NULL. */
static PyObject *decode_one(Decoder *self, const unsigned char *f, Py_ssize_t n) {
    Parsed s;
    enum outcome what = parse_frame(self->linktype, f, n, &s);
    if (what == SEGMENT) return segment_tuple(f, &s);
    if (count(self, what) < 0) return NULL;
    Py_RETURN_NONE;
}

static int supported(int linktype) {
    switch (linktype) {
    case LINKTYPE_NULL:
    case LINKTYPE_ETHERNET:
    case LINKTYPE_RAW_BSD:
    case LINKTYPE_RAW_OPENBSD:
    case LINKTYPE_RAW:
    case LINKTYPE_LOOP:
    case LINKTYPE_LINUX_SLL:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6:
    case LINKTYPE_LINUX_SLL2:
        return 1;
    default:
        return 0;
    }
}

static int Decoder_init(Decoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"linktype", "counters", NULL};
    int linktype;
    PyObject *counters;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO", kwlist, &linktype, &counters)) return -1;
    if (!supported(linktype)) {
        PyErr_Format(PyExc_ValueError, "unsupported link type %d", linktype);
        return -1;
    }
    self->linktype = linktype;
    Py_INCREF(counters);
    Py_XSETREF(self->counters, counters);
    return 0;
}

static int Decoder_traverse(Decoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->counters);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Decoder_clear(Decoder *self) {
    Py_CLEAR(self->counters);
    return 0;
}

static void Decoder_dealloc(Decoder *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Decoder_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Decoder_call(Decoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"frame", NULL};
    Py_buffer frame;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*", kwlist, &frame)) return NULL;
    PyObject *result = decode_one(self, (const unsigned char *)frame.buf, frame.len);
    PyBuffer_Release(&frame);
    return result;
}

/* A Parsed segment of frame f as the C values probe._cflows takes. */
static void to_csegment(const unsigned char *f, const Parsed *s, CSegment *out) {
    out->v6 = s->v6;
    out->src4 = s->src4;
    out->dst4 = s->dst4;
    out->src6 = s->v6 ? f + s->src6 : NULL;
    out->dst6 = s->v6 ? f + s->dst6 : NULL;
    out->sport = s->sport;
    out->dport = s->dport;
    out->flags = s->flags;
    out->seq = s->seq;
    out->ack = s->ack;
    out->len = s->end > s->data ? s->end - s->data : 0;
    out->data = out->len ? f + s->data : NULL;
}

/* batch(buffer, meta, segment): for each 16-byte (sec, usec, offset, caplen) record of
 * meta (native byte order, as struct "IIII"), decode buffer[offset:offset + caplen] and
 * call segment(ts_ns, tuple) for each TCP segment. Returns None.
 *
 * When segment is a probe._cflows.InOrder, each segment is first offered to its C entry
 * (the capsule) as C values pointing into buffer: the Segment tuple, its payload bytes
 * and the timestamp int are built only when it declines, and then handed to what InOrder
 * would have handed them to (FlowTable.segment). */
static PyObject *Decoder_batch(Decoder *self, PyObject *args) {
    Py_buffer buffer, meta;
    PyObject *segment;
    if (!PyArg_ParseTuple(args, "y*y*O", &buffer, &meta, &segment)) return NULL;
    PyObject *result = NULL;
    const CflowsApi *fused = cflows != NULL && Py_IS_TYPE(segment, cflows->inorder_type) ? cflows : NULL;
    if (meta.len % 16) {
        PyErr_SetString(PyExc_ValueError, "meta is not a whole number of 16-byte records");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)buffer.buf;
    const unsigned char *records = (const unsigned char *)meta.buf;
    for (Py_ssize_t i = 0; i < meta.len; i += 16) {
        uint32_t rec[4];
        memcpy(rec, records + i, sizeof rec);
        /* Python's buffer[offset:offset + caplen]: both ends clamped to the buffer. */
        Py_ssize_t start = (Py_ssize_t)rec[2], stop = (Py_ssize_t)rec[2] + (Py_ssize_t)rec[3];
        if (start > buffer.len) start = buffer.len;
        if (stop > buffer.len) stop = buffer.len;
        Py_ssize_t n = stop > start ? stop - start : 0;
        Parsed s;
        const unsigned char *f = base + start;
        enum outcome what = parse_frame(self->linktype, f, n, &s);
        if (what != SEGMENT) {
            if (count(self, what) < 0) goto done;
            continue;
        }
        long long ts_ns = (long long)rec[0] * 1000000000LL + (long long)rec[1] * 1000LL;
        PyObject *callee = segment;
        if (fused != NULL) {
            CSegment cs;
            to_csegment(f, &s, &cs);
            int handled = fused->segment(segment, ts_ns, &cs);
            if (handled < 0) goto done;
            if (handled > 0) continue;
            callee = fused->fallback(segment);
        }
        Py_INCREF(callee);
        PyObject *tuple = segment_tuple(f, &s);
        PyObject *ts = tuple != NULL ? PyLong_FromLongLong(ts_ns) : NULL;
        PyObject *ret = ts != NULL ? PyObject_CallFunctionObjArgs(callee, ts, tuple, NULL) : NULL;
        Py_DECREF(callee);
        Py_XDECREF(ts);
        Py_XDECREF(tuple);
        if (!ret) goto done;
        Py_DECREF(ret);
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&meta);
    return result;
}

/* The owner test of probe.engine.sharded_batch for an established connection: 1 when
 * owners[key] is a [owner, state] list with state true, no SYN/FIN/RST in flags, owner set
 * in *owner; 0 when the general test (sharder.owner) must decide; -1 on error. */
static int established_owner(PyObject *owners, PyObject *key, unsigned flags, long *owner) {
    PyObject *entry = PyDict_GetItemWithError(owners, key); /* borrowed */
    if (!entry) return PyErr_Occurred() ? -1 : 0;
    if (flags & 0x07 || !PyList_Check(entry) || PyList_GET_SIZE(entry) < 2) return 0;
    int state = PyObject_IsTrue(PyList_GET_ITEM(entry, 1));
    if (state <= 0) return state;
    *owner = PyLong_AsLong(PyList_GET_ITEM(entry, 0));
    if (*owner == -1 && PyErr_Occurred()) return -1;
    return 1;
}

/* Whether this worker owns the connection of the segment parsed by the Ethernet fast
 * path: 1 yes, 0 no, -1 error. As probe.engine.sharded_batch's fast path. */
static int owns_fast(PyObject *sharder, PyObject *ports, PyObject *owners, long index, const Parsed *s,
                     unsigned total) {
    PyObject *sport = NULL, *dport = NULL, *addr = NULL, *key = NULL;
    int rc = -1, direction;
    dport = PyLong_FromUnsignedLong(s->dport);
    if (!dport) goto done;
    int in = PySet_Contains(ports, dport);
    if (in < 0) goto done;
    sport = PyLong_FromUnsignedLong(s->sport);
    if (!sport) goto done;
    if (in) {
        direction = 0;
        addr = PyLong_FromUnsignedLong(s->src4);
        if (addr) key = PyTuple_Pack(3, addr, sport, dport);
    } else {
        in = PySet_Contains(ports, sport);
        if (in < 0) goto done;
        if (!in) {
            rc = index == 0; /* other ports: the first worker's */
            goto done;
        }
        direction = 1;
        addr = PyLong_FromUnsignedLong(s->dst4);
        if (addr) key = PyTuple_Pack(3, addr, dport, sport);
    }
    if (!key) goto done;
    long owner;
    int known = established_owner(owners, key, s->flags, &owner);
    if (known < 0) goto done;
    if (!known) {
        /* total > 20 + TCP header length: the segment carries data */
        Py_ssize_t tcp_len = s->data - 34;
        PyObject *got = PyObject_CallMethod(sharder, "owner", "OiIO", key, direction, s->flags,
                                            (Py_ssize_t)total > 20 + tcp_len ? Py_True : Py_False);
        if (!got) goto done;
        owner = PyLong_AsLong(got);
        Py_DECREF(got);
        if (owner == -1 && PyErr_Occurred()) goto done;
    }
    rc = owner == index;
done:
    Py_XDECREF(sport);
    Py_XDECREF(dport);
    Py_XDECREF(addr);
    Py_XDECREF(key);
    return rc;
}

/* sharded_batch(buffer, meta, segment, sharder): probe.engine.sharded_batch compiled. */
static PyObject *Decoder_sharded_batch(Decoder *self, PyObject *args) {
    Py_buffer buffer, meta;
    PyObject *segment, *sharder;
    if (!PyArg_ParseTuple(args, "y*y*OO", &buffer, &meta, &segment, &sharder)) return NULL;
    PyObject *result = NULL, *ports = NULL, *owners = NULL, *index_obj = NULL;
    if (meta.len % 16) {
        PyErr_SetString(PyExc_ValueError, "meta is not a whole number of 16-byte records");
        goto done;
    }
    ports = PyObject_GetAttrString(sharder, "ports");
    owners = ports ? PyObject_GetAttrString(sharder, "owners") : NULL;
    index_obj = owners ? PyObject_GetAttrString(sharder, "index") : NULL;
    if (!index_obj) goto done;
    if (!PyAnySet_Check(ports) || !PyDict_Check(owners)) {
        PyErr_SetString(PyExc_TypeError, "sharder.ports must be a set and sharder.owners a dict");
        goto done;
    }
    long index = PyLong_AsLong(index_obj);
    if (index == -1 && PyErr_Occurred()) goto done;
    const unsigned char *base = (const unsigned char *)buffer.buf;
    const unsigned char *records = (const unsigned char *)meta.buf;
    for (Py_ssize_t i = 0; i < meta.len; i += 16) {
        uint32_t rec[4];
        memcpy(rec, records + i, sizeof rec);
        Py_ssize_t start = (Py_ssize_t)rec[2], stop = (Py_ssize_t)rec[2] + (Py_ssize_t)rec[3];
        if (start > buffer.len) start = buffer.len;
        if (stop > buffer.len) stop = buffer.len;
        Py_ssize_t n = stop > start ? stop - start : 0;
        const unsigned char *f = base + start;
        Parsed s;
        PyObject *tuple = NULL;
        int owned;
        if (self->linktype == LINKTYPE_ETHERNET && n >= 54 && be16(f + 12) == 0x0800 && f[14] == 0x45 &&
            f[23] == 6 && !(be16(f + 20) & 0x3FFF)) {
            parse_frame(LINKTYPE_ETHERNET, f, n, &s); /* the fast path: always a segment */
            owned = owns_fast(sharder, ports, owners, index, &s, be16(f + 16));
            if (owned < 0) goto done;
            if (!owned) continue;
            tuple = segment_tuple(f, &s);
            if (!tuple) goto done;
        } else {
            /* Any other frame: every worker decodes it (counters agree), the owner analyses it. */
            enum outcome what = parse_frame(self->linktype, f, n, &s);
            if (what != SEGMENT) {
                if (count(self, what) < 0) goto done;
                continue;
            }
            tuple = segment_tuple(f, &s);
            if (!tuple) goto done;
            PyObject *got = PyObject_CallMethod(sharder, "owns_segment", "(O)", tuple);
            if (!got) {
                Py_DECREF(tuple);
                goto done;
            }
            owned = PyObject_IsTrue(got);
            Py_DECREF(got);
            if (owned <= 0) {
                Py_DECREF(tuple);
                if (owned < 0) goto done;
                continue;
            }
        }
        PyObject *ts = PyLong_FromLongLong((long long)rec[0] * 1000000000LL + (long long)rec[1] * 1000LL);
        if (!ts) {
            Py_DECREF(tuple);
            goto done;
        }
        PyObject *ret = PyObject_CallFunctionObjArgs(segment, ts, tuple, NULL);
        Py_DECREF(ts);
        Py_DECREF(tuple);
        if (!ret) goto done;
        Py_DECREF(ret);
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(ports);
    Py_XDECREF(owners);
    Py_XDECREF(index_obj);
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&meta);
    return result;
}

static PyMethodDef Decoder_methods[] = {
    {"batch", (PyCFunction)Decoder_batch, METH_VARARGS,
     "batch(buffer, meta, segment): decode every frame of a capture batch, calling segment(ts_ns, seg)."},
    {"sharded_batch", (PyCFunction)Decoder_sharded_batch, METH_VARARGS,
     "sharded_batch(buffer, meta, segment, sharder): batch() for the connections sharder owns."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Decoder_slots[] = {
    {Py_tp_doc, "Decoder(linktype, counters): frame -> Segment | None, as probe.decode.make_decoder."},
    {Py_tp_init, Decoder_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_call, Decoder_call},
    {Py_tp_traverse, Decoder_traverse},
    {Py_tp_clear, Decoder_clear},
    {Py_tp_dealloc, Decoder_dealloc},
    {Py_tp_methods, Decoder_methods},
    {0, NULL},
};

static PyType_Spec Decoder_spec = {
    .name = "probe._cdecode.Decoder",
    .basicsize = sizeof(Decoder),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Decoder_slots,
};

static int module_exec(PyObject *module) {
    static const char *names[5] = {NULL, "non_ip", "non_tcp", "ip_fragments", "truncated"};
    for (int i = 1; i < 5; i++) {
        if (!counter_names[i]) {
            counter_names[i] = PyUnicode_InternFromString(names[i]);
            if (!counter_names[i]) return -1;
        }
    }
    if (cflows == NULL) {
        /* Optional: without it (or another version of it) batch() calls every segment's
         * callback from Python's side. */
        PyObject *other = PyImport_ImportModule("probe._cflows");
        PyObject *capsule = other != NULL ? PyObject_GetAttrString(other, "_C_API") : NULL;
        const CflowsApi *api = capsule != NULL ? PyCapsule_GetPointer(capsule, CFLOWS_CAPSULE) : NULL;
        if (api == NULL)
            PyErr_Clear();
        else if (api->version == CFLOWS_API_VERSION)
            cflows = api; /* static storage in probe._cflows, which stays imported */
        Py_XDECREF(capsule);
        Py_XDECREF(other);
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &Decoder_spec, NULL);
    if (!type) return -1;
    int rc = PyModule_AddObjectRef(module, "Decoder", type);
    Py_DECREF(type);
    return rc;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "probe._cdecode",
    .m_doc = "Compiled frame decoder and batch loop; probe.decode is the pure-Python oracle.",
    .m_size = 0,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__cdecode(void) { return PyModuleDef_Init(&module_def); }
