/* The recording writer's scan of a whole plain answer, in C (see pganswer.scan_answer,
 * the Python it stands in for, and answer_json, which uses it).
 *
 * The writer turns every statement's answer into its recording event, and under
 * pgbench that scan and the sample's JSON were a third of the writer's CPU. This does
 * the same in one pass over the bytes: rows counted, the sample written as the JSON
 * compact_json would write for it. A cell of plain printable ASCII is copied as it is;
 * any other cell is decoded and escaped by the same Python functions the Python path
 * uses. Anything malformed returns None, and the caller runs the Python path, which
 * says how it is malformed: the two never disagree on bad input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define SAMPLE_CHARS 500             /* pgwire.SAMPLE_CHARS */
#define SAMPLE_BYTES (4 * SAMPLE_CHARS) /* pgwire._SAMPLE_BYTES */

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

/* One DataRow's cells as a JSON array; 0 if malformed (pgwire.sample_row would raise). */
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

static PyMethodDef methods[] = {
    {"scan_answer", scan_answer, METH_VARARGS,
     "scan_answer(answer, sample_rows) -> (rows, sampled, RowDescription body or None, "
     "CommandComplete body or None, the sample as JSON), or None if the answer is malformed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pganswer", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pganswer(void) {
    PyObject *json = PyImport_ImportModule("json.encoder");
    if (json == NULL) return NULL;
    encode_basestring = PyObject_GetAttrString(json, "encode_basestring");
    Py_DECREF(json);
    if (encode_basestring == NULL) return NULL;
    return PyModule_Create(&module);
}
