/* probe._cflows, part five: which COM_STMT_EXECUTE requests the fast path holds, and the
 * template they are filed under (see _cexchange.c for the exchange itself).
 *
 * Owns execute_template(): for the payload of one COM_STMT_EXECUTE that a quiescent
 * conversation would describe (probe/mysql/prepared.py, PreparedStatements._describe_execute),
 * the template Python files it under when that describe changes nothing C cannot see:
 *   - the statement is read from conv.prepared at the moment the request comes, the very
 *     dict Python reads (no copy: a CLOSE, a re-PREPARE reusing the id, a RESET or a
 *     COM_RESET_CONNECTION is seen as Python sees it, since each went through Python);
 *   - MariaDB's id -1 ("the last prepared", conv.last_prepared) and unknown ids are
 *     Python's, as are statements whose PREPARE failed or was cut, statements with long
 *     data pending (the execute consumes it), executes with cursor flags, and MariaDB's
 *     COM_STMT_BULK_EXECUTE;
 *   - the parameters: an execute without new types (new_params_bound_flag 0) leaves
 *     stmt.types as it was (decode_params returns the same list, or raises: unchanged
 *     either way); one with new types sets stmt.types to them when its values decode, and
 *     leaves them when they do not, so it is taken only when the types it binds are those
 *     stmt.types already holds (equal either way). The first execute after a PREPARE, and
 *     every one that rebinds other types, is Python's.
 * The parameter values themselves only feed samples of slow statements, which are Python's.
 *
 * Memory safety: the payload is read only below n; the statement's slots are read only
 * after checking the object is exactly a PreparedStatement (offsets found at attach).
 */
#include "_cflows.h"

#define COM_STMT_EXECUTE 0x17
#define LAST_PREPARED 0xFFFFFFFFu

static PyObject *s_stmt_slot_names[6];

enum { ST_TEMPLATE, ST_PARAMS, ST_TYPES, ST_LONG_DATA, ST_FAILED, ST_COMPLETE };

/* Whether types (stmt.types) is a list of exactly count ints equal to the int<2> codes at p. */
static int same_types(PyObject *types, const unsigned char *p, long long count) {
    if (!PyList_CheckExact(types) || PyList_GET_SIZE(types) != count) return 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *code = PyList_GET_ITEM(types, i);
        if (!PyLong_CheckExact(code)) return 0;
        long value = PyLong_AsLong(code);
        if (value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (value != (long)le16(p + 2 * i)) return 0;
    }
    return 1;
}

int execute_template(FastState *fx, PyObject *prepared, const unsigned char *d, Py_ssize_t n, PyObject **template) {
    /* d: the packet (4-byte header, then the payload of n - 4 bytes). Payload layout:
     * 0x17, int<4> statement id, int<1> flags, int<4> iteration count, then with
     * parameters: NULL bitmap, int<1> new_params_bound_flag, [int<2> type per parameter],
     * values. */
    const unsigned char *payload = d + 4;
    const Py_ssize_t size = n - 4;
    if (fx->stmt_type == NULL || size < 10 || payload[0] != COM_STMT_EXECUTE || payload[5] != 0) return 0;
    unsigned long stmt_id = (unsigned long)payload[1] | (unsigned long)payload[2] << 8 |
                            (unsigned long)payload[3] << 16 | (unsigned long)payload[4] << 24;
    if (stmt_id == LAST_PREPARED) return 0;
    if (prepared == NULL || !PyDict_CheckExact(prepared)) return 0;
    PyObject *id = PyLong_FromUnsignedLong(stmt_id);
    if (id == NULL) goto no;
    PyObject *stmt = PyDict_GetItemWithError(prepared, id); /* borrowed */
    Py_DECREF(id);
    if (stmt == NULL || (PyObject *)Py_TYPE(stmt) != fx->stmt_type) goto no;
    PyObject *slots[6];
    for (int i = 0; i < 6; i++)
        if ((slots[i] = SLOT(stmt, fx->stmt_slots[i])) == NULL) return 0;
    PyObject *tpl = slots[ST_TEMPLATE], *long_data = slots[ST_LONG_DATA];
    if (slots[ST_FAILED] != Py_False || slots[ST_COMPLETE] != Py_True || !PyDict_CheckExact(long_data) ||
        PyDict_GET_SIZE(long_data) != 0 || !PyTuple_Check(tpl) || PyTuple_GET_SIZE(tpl) != 2 ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(tpl, 0)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(tpl, 1)) ||
        !PyLong_CheckExact(slots[ST_PARAMS]))
        return 0;
    int overflow = 0;
    long long params = PyLong_AsLongLongAndOverflow(slots[ST_PARAMS], &overflow);
    if (overflow || params < 0 || params > 0xFFFF) goto no;
    if (params > 0) {
        Py_ssize_t bound_at = 10 + (Py_ssize_t)((params + 7) / 8);
        if (bound_at >= size) return 0;
        if (payload[bound_at] != 0) {
            if (bound_at + 1 + 2 * params > size || !same_types(slots[ST_TYPES], payload + bound_at + 1, params))
                return 0;
        }
    }
    *template = Py_NewRef(tpl);
    return 1;
no:
    PyErr_Clear();
    return 0;
}

int execute_attach(FastState *fx) {
    PyObject *module = PyImport_ImportModule("probe.mysql.state");
    if (module == NULL) return -1;
    fx->stmt_type = PyObject_GetAttrString(module, "PreparedStatement");
    Py_DECREF(module);
    if (fx->stmt_type == NULL) return -1;
    if (!PyType_Check(fx->stmt_type)) {
        PyErr_SetString(PyExc_TypeError, "InOrder.attach: PreparedStatement is not a class");
        return -1;
    }
    for (int i = 0; i < 6; i++)
        if (slot_offset(fx->stmt_type, s_stmt_slot_names[i], &fx->stmt_slots[i]) < 0) return -1;
    return 0;
}

int execute_module_init(void) {
    const char *names[6] = {"template", "params", "types", "long_data", "failed", "complete"};
    for (int i = 0; i < 6; i++)
        if ((s_stmt_slot_names[i] = PyUnicode_InternFromString(names[i])) == NULL) return -1;
    return 0;
}
