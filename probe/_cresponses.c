/* probe._cresponses: the compiled walker of a server's packets in command phase.
 *
 * Owns nothing of its own. walk(conv, cmd, data, pos) takes, from data[pos:], the packets
 * that probe/mysql/responses.py's Responses._server_plain parses inline for the request
 * `cmd` at the head of `conv.pending` (continuations of 16 MiB packets, column count,
 * column definitions, the EOF after them, rows, the plain OK and the EOF that end a
 * response), and the column count without metadata that _column_count reads, applies to
 * `cmd` and `conv` exactly what Python applies, and stops at the
 * first packet that needs Python (an ERR, an OK with session state, the last definition of
 * a prepare, a packet not all there, ...). It returns (outcome, pos, status, warnings):
 *   STOP: Python's loop goes on at pos as if it had got there itself;
 *   DONE: the response of `cmd` ended just before pos with (status, warnings): Python
 *         pops and emits it (nothing of that is done here);
 *   SKIP: the rest of data is inside a packet; conv._s_skip says how much of it is left.
 * The pure loop stays the specification: MYSQLPROBE_NO_EXTENSIONS=1 runs it alone, and
 * tests/probe/mysql/test_cresponses.py requires both to give the same events and state.
 *
 * Memory safety: data is a bytes object read only during the call (no pointer kept); a
 * packet header is read only when 4 bytes are there, a payload byte only at an offset
 * below the packet's end and the data's end. Counters are summed in long long from
 * values below 2**32 per packet and a bytes object's size.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* probe/mysql/state.py's response parser states (tested equal to the Python ones). */
#define R_FIRST 0
#define R_COLDEFS 1
#define R_COLS_END 2
#define R_ROWS 3
#define R_PREP_PARAMS 4
#define R_PREP_COLS 6
/* probe/mysql/constants.py */
#define REPLY_STATUS 1
#define REPLY_RESULT 2
#define COMMAND_RESET_CONNECTION 0x1F
#define SERVER_MORE_RESULTS_EXISTS 0x0008
#define SERVER_SESSION_STATE_CHANGED 0x4000
#define MAX_PACKET_LENGTH 0xFFFFFF

enum outcome { STOP = 0, DONE = 1, SKIP = 2 };

/* Interned attribute names. */
static PyObject *s_state, *s_remaining, *s_rows, *s_bytes_out, *s_affected, *s_reply, *s_code, *s_session_arg,
    *s_pieces, *s_cursor, *s_s_cont, *s_s_skip, *s_deprecate_eof;

static int get_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int set_ll(PyObject *obj, PyObject *name, long long value) {
    PyObject *boxed = PyLong_FromLongLong(value);
    if (boxed == NULL) return -1;
    int rc = PyObject_SetAttr(obj, name, boxed);
    Py_DECREF(boxed);
    return rc;
}

/* obj.name += delta (skipped when delta is 0, as the loop's += 0 changes nothing). */
static int add_ll(PyObject *obj, PyObject *name, long long delta) {
    long long value;
    if (delta == 0) return 0;
    if (get_ll(obj, name, &value) < 0) return -1;
    return set_ll(obj, name, value + delta);
}

/* Truth of obj.name (1, 0) or -1 on error. */
static int get_truth(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* Whether obj.name is None (1, 0) or -1 on error. */
static int is_none(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    int none = value == Py_None;
    Py_DECREF(value);
    return none;
}

static inline unsigned le16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

static PyObject *walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "walk(conv, cmd, data, pos) takes 4 arguments");
        return NULL;
    }
    PyObject *conv = args[0], *cmd = args[1], *bytes = args[2];
    Py_ssize_t pos = PyLong_AsSsize_t(args[3]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    if (!PyBytes_Check(bytes) || pos < 0) {
        /* Not a bytes object (Python's loop reads any buffer): leave it all to Python. */
        return Py_BuildValue("(inii)", STOP, pos, 0, 0);
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(bytes);
    const Py_ssize_t n = PyBytes_GET_SIZE(bytes);

    long long state, remaining, reply = -1;
    int cont = get_truth(conv, s_s_cont);
    if (cont < 0 || get_ll(cmd, s_state, &state) < 0 || get_ll(cmd, s_remaining, &remaining) < 0) return NULL;
    const int cont_before = cont;
    const long long state_before = state, remaining_before = remaining;
    long long rows = 0, out = 0, affected = 0;
    enum outcome outcome = STOP;
    unsigned status = 0, warnings = 0;
    Py_ssize_t skip = 0;

    while (n - pos >= 4) {
        const Py_ssize_t length = (Py_ssize_t)d[pos] | (Py_ssize_t)d[pos + 1] << 8 | (Py_ssize_t)d[pos + 2] << 16;
        const Py_ssize_t end = pos + 4 + length;
        if (cont || length == 0) {
            /* Continuation of a payload of 16 MiB or more: nothing in it to interpret. */
            cont = length == MAX_PACKET_LENGTH;
            out += 4 + length;
            if (end > n) {
                skip = end - n;
                outcome = SKIP;
                break;
            }
            pos = end;
            continue;
        }
        if (n - pos < 5) break;
        const unsigned first = d[pos + 4];
        if (state == R_ROWS) {
            if (first < 0xFE || length == MAX_PACKET_LENGTH) {
                /* A row (a 16 MiB one whatever its first byte). */
                rows += 1;
                out += 4 + length;
                cont = length == MAX_PACKET_LENGTH;
                if (end > n) {
                    skip = end - n;
                    outcome = SKIP;
                    break;
                }
                pos = end;
                continue;
            }
            if (end > n) break;
            if (first == 0xFE && length < 9) {
                int plain = is_none(cmd, s_pieces);
                if (plain < 0) return NULL;
                if (plain) {
                    /* EOF after the rows (an old one of 1 byte carries no status). */
                    status = length >= 5 ? le16(d + pos + 7) : 0;
                    warnings = length >= 5 ? le16(d + pos + 5) : 0;
                    if (!(status & SERVER_MORE_RESULTS_EXISTS)) {
                        out += 4 + length;
                        pos = end;
                        outcome = DONE;
                    }
                }
            }
            break;
        }
        if (state == R_COLDEFS || state == R_PREP_PARAMS || state == R_PREP_COLS) {
            if (state != R_COLDEFS && remaining <= 1) break; /* the last one: Python's */
            out += 4 + length;
            remaining -= 1;
            if (remaining <= 0) {
                /* The last column definition: rows follow, or first an EOF. */
                int deprecate = get_truth(conv, s_deprecate_eof);
                if (deprecate < 0) return NULL;
                state = deprecate ? R_ROWS : R_COLS_END;
            }
            if (end > n) {
                skip = end - n;
                outcome = SKIP;
                break;
            }
            pos = end;
            continue;
        }
        if (state == R_FIRST) {
            if (end > n) break;
            if (reply < 0 && get_ll(cmd, s_reply, &reply) < 0) return NULL;
            if (reply == REPLY_RESULT && 0 < first && first < 0xFB && (length == 1 || length == 2)) {
                /* Column count of a result set, with MariaDB's metadata flag or MySQL's
                 * optional-metadata byte (0: no definitions follow, as for the executes of
                 * a statement whose metadata the client cached). */
                out += 4 + length;
                if (length == 2 && d[pos + 5] == 0) {
                    int deprecate = get_truth(conv, s_deprecate_eof);
                    if (deprecate < 0) return NULL;
                    state = deprecate ? R_ROWS : R_COLS_END;
                } else {
                    remaining = first;
                    state = R_COLDEFS;
                }
                pos = end;
                continue;
            }
            if (first == 0 && length >= 7 && (reply == REPLY_RESULT || reply == REPLY_STATUS) && d[pos + 5] < 0xFB &&
                d[pos + 6] < 0xFB) {
                long long code;
                int no_arg = is_none(cmd, s_session_arg);
                if (no_arg < 0 || get_ll(cmd, s_code, &code) < 0) return NULL;
                status = le16(d + pos + 7);
                if (no_arg && code != COMMAND_RESET_CONNECTION &&
                    !(status & (SERVER_MORE_RESULTS_EXISTS | SERVER_SESSION_STATE_CHANGED))) {
                    /* A plain OK packet: affected rows and last insert id of one byte each. */
                    affected += d[pos + 5];
                    out += 4 + length;
                    warnings = le16(d + pos + 9);
                    pos = end;
                    outcome = DONE;
                }
            }
            break;
        }
        if (state == R_COLS_END) {
            if (end > n) break;
            if (first == 0xFE && length == 5) {
                int cursor = get_truth(cmd, s_cursor);
                if (cursor < 0) return NULL;
                if (!cursor) {
                    if (PyObject_SetAttr(conv, s_deprecate_eof, Py_False) < 0) return NULL;
                    out += 9;
                    state = R_ROWS;
                    pos = end;
                    continue;
                }
            }
            break;
        }
        break; /* any other state: Python's */
    }

    if (state != state_before && set_ll(cmd, s_state, state) < 0) return NULL;
    if (remaining != remaining_before && set_ll(cmd, s_remaining, remaining) < 0) return NULL;
    if (add_ll(cmd, s_rows, rows) < 0 || add_ll(cmd, s_bytes_out, out) < 0 || add_ll(cmd, s_affected, affected) < 0)
        return NULL;
    if (cont != cont_before && PyObject_SetAttr(conv, s_s_cont, cont ? Py_True : Py_False) < 0) return NULL;
    if (outcome == SKIP && set_ll(conv, s_s_skip, skip) < 0) return NULL;
    if (outcome != DONE) status = warnings = 0;
    return Py_BuildValue("(inII)", (int)outcome, pos, status, warnings);
}

static PyObject *assumed_constants(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return Py_BuildValue("{sisisisisisisisisisisisi}", "R_FIRST", R_FIRST, "R_COLDEFS", R_COLDEFS, "R_COLS_END",
                         R_COLS_END, "R_ROWS", R_ROWS, "R_PREP_PARAMS", R_PREP_PARAMS, "R_PREP_COLS", R_PREP_COLS,
                         "REPLY_STATUS", REPLY_STATUS, "REPLY_RESULT", REPLY_RESULT, "COMMAND_RESET_CONNECTION",
                         COMMAND_RESET_CONNECTION, "SERVER_MORE_RESULTS_EXISTS", SERVER_MORE_RESULTS_EXISTS,
                         "SERVER_SESSION_STATE_CHANGED", SERVER_SESSION_STATE_CHANGED, "MAX_PACKET_LENGTH",
                         MAX_PACKET_LENGTH);
}

static PyMethodDef module_methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "walk(conv, cmd, data, pos) -> (outcome, pos, status, warnings): the server packets of data[pos:] "
     "Responses._server_plain parses inline, for cmd at the head of conv.pending."},
    {"assumed_constants", assumed_constants, METH_NOARGS,
     "The protocol constants and parser states the walker was compiled with."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_state, "state"},     {&s_remaining, "remaining"},       {&s_rows, "rows"},
        {&s_bytes_out, "bytes_out"}, {&s_affected, "affected"},   {&s_reply, "reply"},
        {&s_code, "code"},       {&s_session_arg, "session_arg"},   {&s_pieces, "pieces"},
        {&s_cursor, "cursor"},   {&s_s_cont, "_s_cont"},            {&s_s_skip, "_s_skip"},
        {&s_deprecate_eof, "deprecate_eof"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL) {
            *names[i].slot = PyUnicode_InternFromString(names[i].name);
            if (*names[i].slot == NULL) return -1;
        }
    }
    if (PyModule_AddIntConstant(module, "STOP", STOP) < 0 || PyModule_AddIntConstant(module, "DONE", DONE) < 0 ||
        PyModule_AddIntConstant(module, "SKIP", SKIP) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "probe._cresponses",
    "The compiled walker of server packets in command phase (see probe/mysql/responses.py).",
    0,
    module_methods,
    module_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__cresponses(void) { return PyModuleDef_Init(&module_def); }
