/* Whole plain answers in C: the Python in app/relay/postgres/answers.py, faster, for the two
 * steps every statement pays for.
 *
 * `scan_answer`, in the recording writer, stands in for answers.scan_answer. The writer
 * turns every statement's answer into its recording event, and under pgbench that scan
 * and the sample's JSON were a third of the writer's CPU. This does the same in one pass
 * over the bytes: rows counted, the sample written as the JSON compact_json would write
 * for it. A cell of plain printable ASCII is copied as it is; any other cell is decoded
 * and escaped by the same Python functions the Python path uses.
 *
 * `mask_rows`, in the relay, stands in for the row loop of answers.masked_answer: it
 * re-frames the DataRows and leaves every decision to the masker, which it calls for
 * each cell the plan names, as Masker.mask_row does.
 *
 * Both return None for anything malformed, and the caller runs the Python, which says
 * how it is malformed: the two never disagree on bad input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define SAMPLE_CHARS 500             /* protocol.SAMPLE_CHARS */
#define SAMPLE_BYTES (4 * SAMPLE_CHARS) /* protocol._SAMPLE_BYTES */

static PyObject *encode_basestring; /* json.encoder.encode_basestring, as compact_json escapes */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int put(Buffer *b, const char *s, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap * 2 > b->len + n ? b->cap * 2 : b->len + n + 256;
        char *data = PyMem_Realloc(b->data, cap);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = data, b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static void set_be32(char *p, Py_ssize_t v) {
    p[0] = (char)(v >> 24), p[1] = (char)(v >> 16), p[2] = (char)(v >> 8), p[3] = (char)v;
}

static int put_be32(Buffer *b, Py_ssize_t v) {
    char bytes[4];
    set_be32(bytes, v);
    return put(b, bytes, 4);
}

static inline int be16(const unsigned char *p) { return (short)(((unsigned)p[0] << 8) | p[1]); }

static inline int be32(const unsigned char *p) {
    return (int)(((unsigned)p[0] << 24) | ((unsigned)p[1] << 16) | ((unsigned)p[2] << 8) | p[3]);
}

/* One cell as compact_json writes str(cell[:SAMPLE_BYTES], "utf-8", "replace")[:SAMPLE_CHARS]. */
static int put_cell(Buffer *b, const unsigned char *p, Py_ssize_t size) {
    int plain = size <= SAMPLE_CHARS;
    for (Py_ssize_t i = 0; plain && i < size; i++)
        plain = p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\';
    if (plain) return put(b, "\"", 1) || put(b, (const char *)p, size) || put(b, "\"", 1);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)p, size < SAMPLE_BYTES ? size : SAMPLE_BYTES, "replace");
    if (text == NULL) return -1;
    if (PyUnicode_GET_LENGTH(text) > SAMPLE_CHARS) Py_SETREF(text, PyUnicode_Substring(text, 0, SAMPLE_CHARS));
    if (text == NULL) return -1;
    PyObject *json = PyObject_CallOneArg(encode_basestring, text);
    Py_DECREF(text);
    if (json == NULL) return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(json, &n);
    int r = utf8 == NULL ? -1 : put(b, utf8, n);
    Py_DECREF(json);
    return r;
}

/* One DataRow's cells as a JSON array; 0 if malformed (protocol.sample_row would raise). */
static int put_row(Buffer *b, const unsigned char *p, Py_ssize_t end) {
    if (end < 2) return 0;
    int count = be16(p);
    Py_ssize_t pos = 2;
    if (put(b, "[", 1)) return -1;
    for (int i = 0; i < count; i++) {
        if (pos + 4 > end) return 0;
        int size = be32(p + pos);
        pos += 4;
        if (i && put(b, ",", 1)) return -1;
        if (size == -1) {
            if (put(b, "null", 4)) return -1;
            continue;
        }
        if (size < 0 || pos + size > end) return 0;
        if (put_cell(b, p + pos, size)) return -1;
        pos += size;
    }
    return put(b, "]", 1) ? -1 : 1;
}

static PyObject *scan_answer(PyObject *module, PyObject *args) {
    const unsigned char *a;
    Py_ssize_t n, sample_rows;
    if (!PyArg_ParseTuple(args, "y#n:scan_answer", &a, &n, &sample_rows)) return NULL;
    Buffer b = {NULL, 0, 0};
    Py_ssize_t pos = 0, rows = 0, sampled = 0, description = -1, complete = -1, dlen = 0, clen = 0;
    PyObject *result = NULL;
    if (put(&b, "[", 1)) goto done;
    while (pos < n) {
        if (n - pos < 5) goto malformed;
        int length = be32(a + pos + 1);
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (length < 4 || end > n) goto malformed;
        switch (a[pos]) {
        case 'D':
            rows++;
            if (sampled < sample_rows) {
                if (sampled++ && put(&b, ",", 1)) goto done;
                int r = put_row(&b, a + pos + 5, length - 4);
                if (r < 0) goto done;
                if (r == 0) goto malformed;
            }
            break;
        case 'T':
            description = pos + 5, dlen = length - 4;
            break;
        case 'C':
            complete = pos + 5, clen = length - 4;
            break;
        }
        pos = end;
    }
    if (put(&b, "]", 1)) goto done;
    PyObject *sample = PyUnicode_DecodeUTF8(b.data, b.len, "strict");
    PyObject *desc = description < 0 ? Py_NewRef(Py_None)
                                     : PyBytes_FromStringAndSize((const char *)a + description, dlen);
    PyObject *tag = complete < 0 ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize((const char *)a + complete, clen);
    if (sample != NULL && desc != NULL && tag != NULL)
        result = Py_BuildValue("nnOOO", rows, sampled, desc, tag, sample);
    Py_XDECREF(sample);
    Py_XDECREF(desc);
    Py_XDECREF(tag);
    goto done;
malformed:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(b.data);
    return result;
}

/* The frames of chunk[start:z] with each DataRow's cells named in `cells` ((index,
 * strength) pairs) replaced by cell(value, strength), as masking.mask_row builds them:
 * the cell count is the one read, floored at 0, and nothing after the last cell is kept. */
static PyObject *mask_rows(PyObject *module, PyObject *args) {
    const unsigned char *c;
    Py_ssize_t n, start, z;
    PyObject *cells, *cell;
    if (!PyArg_ParseTuple(args, "y#nnO!O:mask_rows", &c, &n, &start, &z, &PyTuple_Type, &cells, &cell)) return NULL;
    if (start < 0 || z > n || start > z) {
        PyErr_SetString(PyExc_ValueError, "mask_rows: start and z must be within the chunk");
        return NULL;
    }
    /* The plan's cells, read once: the index each names, and its strength. */
    Py_ssize_t named = PyTuple_GET_SIZE(cells);
    long *indexes = PyMem_New(long, named > 0 ? named : 1);
    PyObject **strengths = PyMem_New(PyObject *, named > 0 ? named : 1);
    Buffer b = {NULL, 0, 0};
    PyObject *result = NULL;
    if (indexes == NULL || strengths == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < named; k++) {
        PyObject *pair = PyTuple_GET_ITEM(cells, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "mask_rows: cells are (index, strength) pairs");
            goto done;
        }
        indexes[k] = PyLong_AsLong(PyTuple_GET_ITEM(pair, 0));
        if (indexes[k] == -1 && PyErr_Occurred()) goto done;
        strengths[k] = PyTuple_GET_ITEM(pair, 1); /* borrowed: `cells` holds it for the call */
    }
    Py_ssize_t pos = start;
    while (pos < z) {
        if (z - pos < 5) goto malformed;
        int length = be32(c + pos + 1);
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (length < 4 || end > z) goto malformed;
        if (c[pos] != 'D') {
            if (put(&b, (const char *)c + pos, end - pos)) goto done;
            pos = end;
            continue;
        }
        const unsigned char *row = c + pos + 5;
        Py_ssize_t row_end = length - 4, at = 2;
        if (row_end < 2) goto malformed;
        int count = be16(row) > 0 ? be16(row) : 0;
        Py_ssize_t frame_at = b.len;
        unsigned char head[7] = {'D', 0, 0, 0, 0, (unsigned char)(count >> 8), (unsigned char)count};
        if (put(&b, (const char *)head, 7)) goto done;
        for (int i = 0; i < count; i++) {
            if (at + 4 > row_end) goto malformed;
            int size = be32(row + at);
            at += 4;
            if (size == -1) {
                if (put(&b, "\xff\xff\xff\xff", 4)) goto done;
                continue;
            }
            if (size < 0 || at + size > row_end) goto malformed;
            PyObject *strength = NULL;
            for (Py_ssize_t k = 0; k < named && strength == NULL; k++)
                if (indexes[k] == i) strength = strengths[k];
            if (strength == NULL) {
                if (put_be32(&b, size) || put(&b, (const char *)row + at, size)) goto done;
            } else {
                PyObject *value = PyBytes_FromStringAndSize((const char *)row + at, size);
                if (value == NULL) goto done;
                PyObject *out = PyObject_CallFunctionObjArgs(cell, value, strength, NULL);
                Py_DECREF(value);
                if (out == NULL) goto done;
                if (!PyBytes_Check(out) || PyBytes_GET_SIZE(out) > 0x7fffffff) {
                    Py_DECREF(out);
                    PyErr_SetString(PyExc_TypeError, "mask_rows: the masker must return bytes for a cell");
                    goto done;
                }
                int r = put_be32(&b, PyBytes_GET_SIZE(out)) || put(&b, PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out));
                Py_DECREF(out);
                if (r) goto done;
            }
            at += size;
        }
        Py_ssize_t frame_len = b.len - frame_at - 1;
        if (frame_len > 0x7fffffff) {
            PyErr_SetString(PyExc_ValueError, "mask_rows: a masked row is too long");
            goto done;
        }
        set_be32(b.data + frame_at + 1, frame_len);
        pos = end;
    }
    result = PyBytes_FromStringAndSize(b.data, b.len);
    goto done;
malformed:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(b.data);
    PyMem_Free(indexes);
    PyMem_Free(strengths);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_answer", scan_answer, METH_VARARGS,
     "scan_answer(answer, sample_rows) -> (rows, sampled, RowDescription body or None, "
     "CommandComplete body or None, the sample as JSON), or None if the answer is malformed"},
    {"mask_rows", mask_rows, METH_VARARGS,
     "mask_rows(chunk, start, z, cells, cell) -> the frames of chunk[start:z] with the named cells of every "
     "DataRow replaced by cell(value, strength), or None if a DataRow is malformed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_answers", NULL, -1, methods};

PyMODINIT_FUNC PyInit__answers(void) {
    PyObject *json = PyImport_ImportModule("json.encoder");
    if (json == NULL) return NULL;
    encode_basestring = PyObject_GetAttrString(json, "encode_basestring");
    Py_DECREF(json);
    if (encode_basestring == NULL) return NULL;
    return PyModule_Create(&module);
}
