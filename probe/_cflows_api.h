/* The C entry of probe._cflows that probe._cdecode's batch loop calls without building a
 * segment tuple: published by probe._cflows as the capsule "probe._cflows._C_API" (a
 * CflowsApi), imported by probe._cdecode at its initialisation. Include after Python.h. */
#ifndef PROBE_CFLOWS_API_H
#define PROBE_CFLOWS_API_H
#include <stdint.h>

#define CFLOWS_CAPSULE "probe._cflows._C_API"
#define CFLOWS_API_VERSION 1

/* One decoded TCP segment, as the fields of a probe.decode.Segment. The pointers point into
 * the caller's frame and are valid during the call only. */
typedef struct {
    int v6;
    uint32_t src4, dst4;               /* IPv4 addresses (v6 == 0) */
    const unsigned char *src6, *dst6;  /* 16-byte IPv6 addresses (v6 == 1) */
    unsigned sport, dport, flags;
    uint32_t seq, ack;
    const unsigned char *data;         /* the payload, len bytes (NULL when len == 0) */
    Py_ssize_t len;
} CSegment;

typedef struct {
    int version; /* CFLOWS_API_VERSION */
    /* probe._cflows.InOrder: segment() takes only objects of exactly this type. */
    PyTypeObject *inorder_type;
    /* What InOrder(ts_ns, seg) does for the common segment: 1 when it handled it, 0 when
     * it declined before changing anything (the caller builds the Segment tuple and calls
     * fallback(inorder) with it, as InOrder itself would), -1 with an exception set. */
    int (*segment)(PyObject *inorder, long long ts_ns, const CSegment *seg);
    /* A borrowed reference to the callable InOrder hands declined segments to. */
    PyObject *(*fallback)(PyObject *inorder);
} CflowsApi;

#endif
