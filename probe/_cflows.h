/* Shared by the files of probe._cflows, one extension module: _cflows.c (InOrder: the
 * in-order TCP path), _cexchange.c (its fast path: an exchange held and completed in C),
 * _cwire.c (the bytes it reads), _caccs.c (the counters it adds to), _cexecute.c (which
 * COM_STMT_EXECUTE it takes). */
#ifndef PROBE_CFLOWS_H
#define PROBE_CFLOWS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* Offsets of the __slots__ of probe.flows.Connection and HalfStream. */
typedef struct {
    Py_ssize_t waiting, halves, conv, last_ns, held, key;
} ConnSlots;

/* The connection-key cache of _cflows.c: for one address/port 4-tuple as captured (either
 * direction of a connection has its own entry), the objects Python would build for it and
 * the key tuple the connection table stores it under. Entries hold strong references. */
typedef struct {
    int used, v6;
    uint32_t src4, dst4;
    unsigned char src6[16], dst6[16];
    unsigned sport, dport;
    PyObject *src, *dst, *sp, *dp;
    PyObject *key;     /* Connection.key when last found (NULL: none yet) */
    int key_direction; /* the direction that key was found for */
} KeyEntry;
#define KEY_CACHE 1024 /* entries, a power of two; a collision replaces the entry */
typedef struct {
    Py_ssize_t started, next_seq, offset, fin, ooo;
} HalfSlots;

/* The commands the fast path completes (Acc.command, Held.command). */
#define FX_QUERY 0
#define FX_EXECUTE 1
#define FX_COMMANDS 2

/* Distinct error codes one accumulator counts (ERR responses); a statement with another
 * code is Python's (FastState.fast_error_codes_full). */
#define ACC_ERROR_CODES 4
typedef struct {
    unsigned code; /* 1 .. 65534 (0: a free slot) */
    long long count;
} AccError;

/* One statement template's counters for one (server, db, user, key) and command: what
 * Aggregator.add would have added, folded into its TemplateStats by Aggregator.fold. */
typedef struct {
    PyObject *server, *db, *user, *key; /* strong references; NULL: a free entry */
    Py_hash_t hash;
    int command; /* FX_QUERY, FX_EXECUTE */
    long long count, latency_sum, latency_min, latency_max, ttfb_sum, first_ns, last_ns, rows, affected, bytes_in,
        bytes_out, no_index, no_good_index, warnings, zero;
    int lo, nbins; /* sketch buckets lo .. lo + nbins - 1 */
    long long *bins;
    AccError errors[ACC_ERROR_CODES]; /* statements answered by an ERR, by code */
} Acc;

/* A skeleton cache entry: the literal skeleton of a COM_QUERY and its Template. */
typedef struct {
    unsigned long long hash;
    Py_ssize_t len;
    char *text;         /* NULL: a free entry */
    PyObject *template; /* probe.normalize.Template (key, text) */
} SkelEntry;

/* Fields of a Conversation that _cexchange.c reads or writes by slot offset (CF_* there). */
#define CONV_FIELDS 24

typedef struct {
    int enabled;                /* attach() was called */
    PyObject *aggregator;       /* probe.aggregate.Aggregator */
    PyObject *normalizer;       /* flows.normalizer */
    PyObject *conv_type;        /* probe.mysql.conversation.Conversation */
    Py_ssize_t conv_slots[CONV_FIELDS]; /* offsets of its slots, by CF_* of _cexchange.c */
    PyObject *limits_type;      /* probe.mysql.state.ConversationLimits */
    PyObject *limits;           /* the last ConversationLimits read, or NULL */
    long long max_query;        /* its max_query_bytes */
    PyObject *deque_type;       /* collections.deque */
    PyObject *pinned_type;      /* probe.flows.PinnedTemplate */
    PyObject *stmt_type;        /* probe.mysql.state.PreparedStatement */
    Py_ssize_t stmt_slots[6];   /* its slots template, params, types, long_data, failed, complete */
    long long query_attributes; /* CLIENT_QUERY_ATTRIBUTES */
    long long no_index_flag, no_good_index_flag;
    int *key_table; /* message.sketch._KEY_TABLE */
    Py_ssize_t key_table_len;
    /* The skeleton cache: valid while normalizer.cache_resets == skel_resets. */
    SkelEntry *skel;
    Py_ssize_t skel_cap, skel_used, skel_max;
    long long skel_resets;
    /* Accumulators, an open-addressing table of acc_cap entries (acc_used in use). */
    Acc *accs;
    Py_ssize_t acc_cap, acc_used, acc_max;
    /* The skeleton of the client segment being fed, to learn its template afterwards. */
    char *scratch;
    Py_ssize_t scratch_cap, scratch_len;
    int learn;
    /* Counters. */
    long long fast_exchanges, fast_replayed, fast_cache_resets, fast_accs_full, fast_error_codes_full;
    long long fast_multi_segments; /* fast_exchanges whose response spanned server segments */
} FastState;

typedef struct {
    PyObject_HEAD
    PyObject *flows;      /* the FlowTable */
    Py_ssize_t tcp_segments_slot, on_events_slot; /* offsets of those slots of type(flows) */
    PyObject *conn_type;  /* probe.flows.Connection */
    PyObject *half_type;  /* probe.flows.HalfStream */
    ConnSlots conn_slots;
    HalfSlots half_slots;
    PyObject *conns;      /* flows.table */
    PyObject *ports;      /* flows.ports */
    PyObject *server_ips; /* flows.server_ips (None: any) */
    PyObject *fallback;   /* flows.segment (bound) */
    vectorcallfunc vectorcall;
    KeyEntry *keys; /* KEY_CACHE entries, allocated at the first C-valued segment */
    FastState fx;
} InOrder;

/* _cwire.c */
typedef struct {
    long long rows, affected;
    unsigned status, warnings;
    unsigned err_code; /* an ERR packet's error code (1 .. 65534), 0: not an ERR */
    int deprecate; /* what conv.deprecate_eof becomes: -1 unchanged, 0 False, 1 True */
} Resp;
static inline Py_ssize_t le24(const unsigned char *p) {
    return (Py_ssize_t)p[0] | (Py_ssize_t)p[1] << 8 | (Py_ssize_t)p[2] << 16;
}
static inline unsigned le16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
/* The literal skeleton of sql (n bytes) into out (room for n): its length, or -1. */
Py_ssize_t skeleton(const unsigned char *s, Py_ssize_t n, char *out);
/* What a server segment does to a held exchange's response (parse_response). */
#define RESP_NONE 0 /* the exchange is Python's */
#define RESP_DONE 1 /* the response ended with the segment */
#define RESP_MORE 2 /* the segment ended after a result with MORE_RESULTS: more to come */
#define RESP_INIT {0, 0, 0, 0, 0, -1}
/* How the server segment d[0:n] goes on with the response r holds so far (RESP_INIT at
 * first): RESP_DONE, RESP_MORE or RESP_NONE. */
int parse_response(const unsigned char *d, Py_ssize_t n, int deprecate, Resp *r);

/* _cflows.c: the offset of the __slots__ member `name` of class `cls` (declared by cls or a
 * class it derives from); 0, or -1 with TypeError when it is not a writable object slot. */
int slot_offset(PyObject *cls, PyObject *name, Py_ssize_t *out);

/* _caccs.c */
int accs_module_init(void);
void acc_free(Acc *a);
/* The accumulator of (server, db, user, key, command), made when the aggregator already has
 * that template this interval; NULL (no error) when it is not there or the table is full. */
Acc *acc_for(FastState *fx, PyObject *server, PyObject *db, PyObject *user, PyObject *key, int command);
/* Reserves a's slot for error code `code` (found or free): 0, or -1 when a counts
 * ACC_ERROR_CODES other codes already (the statement is then Python's). */
int acc_error_slot(Acc *a, unsigned code);
/* What Aggregator.add adds for one statement (r: its response; an ERR's code must have its
 * slot reserved by acc_error_slot); 0 or -1. */
int acc_add(FastState *fx, Acc *a, long long start_ns, long long end_ns, long long latency, long long ttfb,
            long long bytes_in, long long bytes_out, const Resp *r);

/* _cexecute.c */
int execute_module_init(void);
/* Finds PreparedStatement and its slots (fx->stmt_type, fx->stmt_slots); 0 or -1. */
int execute_attach(FastState *fx);
/* The packet d[0:n] holds one COM_STMT_EXECUTE: 1 with *template (a new reference) when the
 * fast path may hold it (prepared: the conversation's `prepared` dict, borrowed, or NULL),
 * 0 when it is Python's. */
int execute_template(FastState *fx, PyObject *prepared, const unsigned char *d, Py_ssize_t n, PyObject **template);

/* _cexchange.c */
int fx_module_init(PyObject *module);
PyObject *fx_attach(InOrder *self, PyObject *aggregator);
PyObject *fx_fold(InOrder *self);
void fx_release(FastState *fx);
int fx_traverse(FastState *fx, visitproc visit, void *arg);
/* 1: the segment was handled (held or completed); 0: the caller feeds it (anything held
 * on the connection was replayed first); -1: error. Its payload is d[0:n]; payload is the
 * same bytes as an object or NULL (a held segment then keeps a copy of d). */
int fx_segment(InOrder *self, PyObject *conn, PyObject *conv, PyObject *ts, int direction, const unsigned char *d,
               Py_ssize_t n, PyObject *payload, int has_ack, long long ack);
/* After the caller fed a client segment fx_segment declined: learn its template. */
void fx_learn(InOrder *self);
PyObject *fx_skeleton(PyObject *module, PyObject *arg);
/* Calls flows.on_events(events) when events is true; 0 or -1. */
int inorder_emit(InOrder *self, PyObject *events);

#endif
