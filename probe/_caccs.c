/* probe._cflows, part four: the per-template counters of the exchanges completed in C.
 *
 * Owns FastState.accs, an open-addressing table of Acc entries, one per (server, db,
 * user, template key, command) the fast path completed a statement of this interval:
 * acc_for() finds or makes one (only when the aggregator already has a TemplateStats for
 * that (server, db, user, key): fold() merges into it), acc_add() adds one statement as
 * Aggregator.add would (an ERR's under its code, in at most ACC_ERROR_CODES codes per entry:
 * acc_error_slot() refuses another, and that statement is Python's), fx_fold() hands the
 * rows to Aggregator.fold and empties the table.
 * The commands a row is filed under are Conversation's names: "Query" (COM_QUERY) and
 * "Execute" (COM_STMT_EXECUTE).
 *
 * Memory safety: sketch buckets are indexed only within lo .. lo + nbins - 1 (grown to
 * hold a new key first); counters are long long sums of values below 2**32 per statement.
 */
#include "_cflows.h"

#include <string.h>

static PyObject *s_templates, *s_commands[FX_COMMANDS];

void acc_free(Acc *a) {
    Py_CLEAR(a->server);
    Py_CLEAR(a->db);
    Py_CLEAR(a->user);
    Py_CLEAR(a->key);
    PyMem_Free(a->bins);
    memset(a, 0, sizeof(*a));
}

static int str_eq(PyObject *a, PyObject *b) { return a == b || PyUnicode_Compare(a, b) == 0; }

Acc *acc_for(FastState *fx, PyObject *server, PyObject *db, PyObject *user, PyObject *key, int command) {
    Py_hash_t h1 = PyObject_Hash(server), h2 = PyObject_Hash(db), h3 = PyObject_Hash(user), h4 = PyObject_Hash(key);
    if (h1 == -1 || h2 == -1 || h3 == -1 || h4 == -1) {
        PyErr_Clear();
        return NULL;
    }
    Py_uhash_t hash =
        ((Py_uhash_t)h1 * 1000003u ^ (Py_uhash_t)h2 * 31u ^ (Py_uhash_t)h3 * 7u ^ (Py_uhash_t)h4) + (Py_uhash_t)command;
    Py_ssize_t mask = fx->acc_cap - 1, i = (Py_ssize_t)(hash & (Py_uhash_t)mask);
    for (;; i = (i + 1) & mask) {
        Acc *a = &fx->accs[i];
        if (a->key == NULL) break;
        if (a->hash == (Py_hash_t)hash && a->command == command && str_eq(a->key, key) && str_eq(a->db, db) &&
            str_eq(a->user, user) && str_eq(a->server, server))
            return a;
    }
    if (fx->acc_used >= fx->acc_max) {
        fx->fast_accs_full++;
        return NULL;
    }
    PyObject *agg = PyObject_GenericGetDict(fx->aggregator, NULL);
    if (agg == NULL) goto no;
    PyObject *templates = PyDict_GetItemWithError(agg, s_templates);
    Py_DECREF(agg); /* templates stays referenced by the aggregator */
    if (templates == NULL || !PyDict_CheckExact(templates)) goto no;
    PyObject *ident = PyTuple_Pack(4, server, db, user, key);
    if (ident == NULL) goto no;
    PyObject *stats = PyDict_GetItemWithError(templates, ident);
    Py_DECREF(ident);
    if (stats == NULL) goto no;
    Acc *a = &fx->accs[i];
    a->server = Py_NewRef(server);
    a->db = Py_NewRef(db);
    a->user = Py_NewRef(user);
    a->key = Py_NewRef(key);
    a->hash = (Py_hash_t)hash;
    a->command = command;
    fx->acc_used++;
    return a;
no:
    PyErr_Clear();
    return NULL;
}

static int acc_bucket(Acc *a, int key) {
    if (a->nbins == 0) {
        if ((a->bins = PyMem_Calloc(1, sizeof(long long))) == NULL) return -1;
        a->lo = key;
        a->nbins = 1;
    } else if (key < a->lo || key >= a->lo + a->nbins) {
        int lo = key < a->lo ? key : a->lo, hi = key >= a->lo + a->nbins ? key + 1 : a->lo + a->nbins;
        long long *bins = PyMem_Calloc((size_t)(hi - lo), sizeof(long long));
        if (bins == NULL) return -1;
        memcpy(bins + (a->lo - lo), a->bins, (size_t)a->nbins * sizeof(long long));
        PyMem_Free(a->bins);
        a->bins = bins;
        a->lo = lo;
        a->nbins = hi - lo;
    }
    a->bins[key - a->lo]++;
    return 0;
}

int acc_error_slot(Acc *a, unsigned code) {
    for (int i = 0; i < ACC_ERROR_CODES; i++) {
        if (a->errors[i].code == code) return 0;
        if (a->errors[i].code == 0) {
            a->errors[i].code = code;
            return 0;
        }
    }
    return -1;
}

int acc_add(FastState *fx, Acc *a, long long start_ns, long long end_ns, long long latency, long long ttfb,
            long long bytes_in, long long bytes_out, const Resp *r) {
    if (latency > 0 && acc_bucket(a, fx->key_table[latency]) < 0) return -1;
    if (latency <= 0) a->zero++;
    if (a->count == 0 || latency < a->latency_min) a->latency_min = latency;
    if (a->count == 0 || latency > a->latency_max) a->latency_max = latency;
    if (a->count == 0 || start_ns < a->first_ns) a->first_ns = start_ns;
    if (a->count == 0 || end_ns > a->last_ns) a->last_ns = end_ns;
    a->count++;
    a->latency_sum += latency;
    a->ttfb_sum += ttfb;
    a->rows += r->rows;
    a->affected += r->affected;
    a->bytes_in += bytes_in;
    a->bytes_out += bytes_out;
    if (r->status & fx->no_index_flag) a->no_index++;
    if (r->status & fx->no_good_index_flag) a->no_good_index++;
    a->warnings += r->warnings;
    if (r->err_code) {
        for (int i = 0; i < ACC_ERROR_CODES; i++) {
            if (a->errors[i].code == r->err_code) {
                a->errors[i].count++;
                return 0;
            }
        }
        return -1; /* not reserved: acc_error_slot was not called */
    }
    return 0;
}

/* {str(code): count} of the codes a counted (a new reference), or NULL. */
static PyObject *acc_errors(const Acc *a) {
    PyObject *errors = PyDict_New();
    for (int i = 0; errors != NULL && i < ACC_ERROR_CODES; i++) {
        if (a->errors[i].count == 0) continue;
        PyObject *code = PyUnicode_FromFormat("%u", a->errors[i].code), *count = PyLong_FromLongLong(a->errors[i].count);
        int rc = code == NULL || count == NULL ? -1 : PyDict_SetItem(errors, code, count);
        Py_XDECREF(code);
        Py_XDECREF(count);
        if (rc < 0) Py_CLEAR(errors);
    }
    return errors;
}

PyObject *fx_fold(InOrder *self) {
    FastState *fx = &self->fx;
    PyObject *rows = PyList_New(0);
    if (rows == NULL || !fx->enabled) return rows;
    for (Py_ssize_t i = 0; i < fx->acc_cap; i++) {
        Acc *a = &fx->accs[i];
        if (a->key == NULL) continue;
        if (a->count) {
            PyObject *bins = PyDict_New();
            if (bins == NULL) goto fail;
            for (int k = 0; k < a->nbins; k++) {
                if (!a->bins[k]) continue;
                PyObject *key = PyLong_FromLong(a->lo + k), *count = PyLong_FromLongLong(a->bins[k]);
                int rc = key == NULL || count == NULL ? -1 : PyDict_SetItem(bins, key, count);
                Py_XDECREF(key);
                Py_XDECREF(count);
                if (rc < 0) {
                    Py_DECREF(bins);
                    goto fail;
                }
            }
            PyObject *errors = acc_errors(a);
            if (errors == NULL) {
                Py_DECREF(bins);
                goto fail;
            }
            PyObject *row = Py_BuildValue("(OOOOOLLLLLLLLLLLLLLLNN)", a->server, a->db, a->user, a->key,
                                          s_commands[a->command], a->count, a->latency_sum, a->latency_min,
                                          a->latency_max, a->ttfb_sum, a->first_ns, a->last_ns, a->rows, a->affected,
                                          a->bytes_in, a->bytes_out, a->no_index, a->no_good_index, a->warnings,
                                          a->zero, bins, errors);
            if (row == NULL || PyList_Append(rows, row) < 0) {
                Py_XDECREF(row);
                goto fail;
            }
            Py_DECREF(row);
        }
        acc_free(a);
    }
    fx->acc_used = 0;
    return rows;
fail:
    Py_DECREF(rows);
    return NULL;
}

int accs_module_init(void) {
    const char *names[FX_COMMANDS] = {"Query", "Execute"};
    if (s_templates == NULL && (s_templates = PyUnicode_InternFromString("templates")) == NULL) return -1;
    for (int i = 0; i < FX_COMMANDS; i++)
        if (s_commands[i] == NULL && (s_commands[i] = PyUnicode_InternFromString(names[i])) == NULL) return -1;
    return 0;
}
