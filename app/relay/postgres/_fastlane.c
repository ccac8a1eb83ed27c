/* The relay's fast lane: a statement of an allowed shape, and its whole plain answer,
 * relayed without running Python bytecode (see app/relay/postgres/fastlane.py for the contract).
 *
 * Under pgbench the relay's event loop is the chain every transaction waits on, and its
 * Python (framing, the shape look-up, the answer scan, about 15 us a statement) cost a
 * third of the throughput of a bare pipe. This module does that steady-state work in C
 * and decides nothing: the shapes, the stamp, the token re-check, masking and recording
 * stay in Python and are called from here. Anything out of the ordinary (a statement of
 * an unknown shape, several messages in a chunk, an answer that is not one whole plain
 * answer) goes to the Python path unchanged, after the statement in flight on the lane,
 * if any, has been handed back to it (`materialize`), so the Python path always sees
 * the conversation exactly as if it had handled every message itself.
 *
 * The interface is narrow and explicit: the lane reads no attribute of the conversation,
 * the stream or the wires. What it needs is passed to Lane() as callables (is the Python
 * path at rest, the next batch number, write to either side, the stamp, the verdict's
 * reuse, masking, recording, the answer's end) and the shape table; a shape's public
 * fields (stamp, lead, tail, rule, mask_names, masker) are the only attributes it reads.
 *
 * Every callback may close the lane (Lane.close clears every field): the lane holds its
 * own references to what it uses across a callback, and looks at `active` and `pending`
 * again after each. No Python API is called while an exception is pending: each error
 * is either cleared at once (nothing sent yet: the Python path redoes the work and fails
 * closed as it always does) or returned at once (after a write: it propagates to the
 * event loop, which closes the connection).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#define MAX_TEXT 8192 /* app.sql.cache.MAX_TEXT: longer texts are never remembered */

#define N_FIELDS 15

typedef struct {
    PyObject_HEAD
    int active;
    /* the conversation's interface, set once (see lane_kwlist) */
    PyObject *at_rest, *next_batch, *write_target, *write_client, *shapes, *stamp, *allowed_again, *record,
        *answer_json, *masked_answer, *hand_back, *stream_at_rest, *answered, *refuse_binary, *sample_rows;
    /* the statement in flight on the lane */
    int pending;
    PyObject *statement, *rule, *masks, *masker, *batch;
    double since;
    Py_ssize_t carried; /* statements the lane relayed, question and whole answer */
} Lane;

typedef struct {
    PyObject_HEAD
    PyObject *lane; /* a Lane, or NULL */
    int side;       /* 0: the client's wire, 1: the target's */
} WireBase;

static PyObject *s_stamp, *s_lead, *s_tail, *s_rule, *s_mask_names, *s_masker, *s_output, *s_received;

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* what time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline unsigned int be32(const unsigned char *p) {
    return ((unsigned int)p[0] << 24) | ((unsigned int)p[1] << 16) | ((unsigned int)p[2] << 8) | p[3];
}

static inline int is_word(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Calls that hold their own reference to the callable and its argument: a callback
 * that closes the lane drops the lane's references while the call runs. */
static PyObject *call0(PyObject *fn) {
    Py_INCREF(fn);
    PyObject *r = PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    return r;
}

static PyObject *call1(PyObject *fn, PyObject *arg) {
    Py_INCREF(fn);
    Py_INCREF(arg);
    PyObject *r = PyObject_CallOneArg(fn, arg);
    Py_DECREF(arg);
    Py_DECREF(fn);
    return r;
}

static int call_true(PyObject *fn) { /* fn()'s truth: 1, 0, or -1 with the exception set */
    PyObject *v = call0(fn);
    if (v == NULL) return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static int call_write(PyObject *write, PyObject *data) { /* Wire.write: nothing once lost */
    PyObject *r = call1(write, data);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* The shape key of an ASCII text: app.sql.cache.NUMBER.sub("0", text), i.e. every
 * maximal run of digits with no letter, digit or underscore on either side becomes 0. */
static PyObject *shape_key(const unsigned char *t, Py_ssize_t n) {
    PyObject *key = PyUnicode_New(n, 127);
    if (key == NULL) return NULL;
    unsigned char *k = PyUnicode_1BYTE_DATA(key);
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        unsigned char c = t[i];
        if (c < '0' || c > '9' || (i > 0 && is_word(t[i - 1]))) {
            k[o++] = c;
            i++;
            continue;
        }
        Py_ssize_t j = i;
        while (j < n && t[j] >= '0' && t[j] <= '9') j++;
        if (j < n && is_word(t[j])) {
            memcpy(k + o, t + i, j - i);
            o += j - i;
        } else {
            k[o++] = '0';
        }
        i = j;
    }
    if (o < n) {
        PyObject *cut = PyUnicode_Substring(key, 0, o);
        Py_DECREF(key);
        return cut;
    }
    return key;
}

/* -- the client's side: one Query of an allowed shape -------------------------------- */

/* 1: relayed; 0: not for the lane (nothing done, no exception); -1: an error after the
 * statement became the lane's (the exception set). */
static int client_query(Lane *l, PyObject *data) {
    if (!l->active || l->pending || !PyBytes_CheckExact(data)) return 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), tlen = n - 6;
    if (n < 6 || p[0] != 'Q' || (Py_ssize_t)be32(p + 1) + 1 != n || p[n - 1] != 0 || tlen > MAX_TEXT) return 0;
    const unsigned char *text = p + 5;
    for (Py_ssize_t i = 0; i < tlen; i++)
        if (text[i] >= 0x80 || text[i] == 0) return 0;

    PyObject *key = NULL, *shape = NULL, *current = NULL, *stamp = NULL, *ok = NULL, *lead = NULL, *tail = NULL;
    PyObject *rule = NULL, *masks = NULL, *masker = NULL, *batch = NULL, *statement = NULL, *full = NULL;
    PyObject *write = NULL;
    int result = 0, r;
    /* The Python path has nothing buffered, waiting or in flight, and reads UTF-8. */
    if ((r = call_true(l->at_rest)) != 1 || !l->active) goto done;
    if ((key = shape_key(text, tlen)) == NULL) goto done;
    if ((shape = PyDict_GetItemWithError(l->shapes, key)) == NULL) goto done;
    Py_INCREF(shape);
    if ((current = call0(l->stamp)) == NULL || current == Py_None || !l->active) goto done;
    if ((stamp = PyObject_GetAttr(shape, s_stamp)) == NULL) goto done;
    if ((r = PyObject_RichCompareBool(stamp, current, Py_EQ)) != 1) goto done; /* Python clears stale shapes */
    if ((lead = PyObject_GetAttr(shape, s_lead)) == NULL || (tail = PyObject_GetAttr(shape, s_tail)) == NULL)
        goto done;
    Py_ssize_t a = PyLong_AsSsize_t(lead);
    if (a == -1 && PyErr_Occurred()) goto done;
    Py_ssize_t t = PyLong_AsSsize_t(tail);
    if (t == -1 && PyErr_Occurred()) goto done;
    Py_ssize_t b = tlen - t;
    if (a < 0 || b < a || b > tlen) goto done;
    if ((rule = PyObject_GetAttr(shape, s_rule)) == NULL || (masks = PyObject_GetAttr(shape, s_mask_names)) == NULL ||
        (masker = PyObject_GetAttr(shape, s_masker)) == NULL)
        goto done;
    if (!l->active) goto done;
    if ((ok = call1(l->allowed_again, shape)) == NULL || (r = PyObject_IsTrue(ok)) != 1 || !l->active) goto done;

    /* Allowed: from here on the statement is the lane's. */
    write = Py_NewRef(l->write_target);
    if ((full = PyUnicode_FromStringAndSize((const char *)text, tlen)) == NULL ||
        (statement = PyUnicode_Substring(full, a, b)) == NULL || (batch = call0(l->next_batch)) == NULL)
        goto failed;
    if (!l->active) {
        PyErr_SetString(PyExc_RuntimeError, "the fast lane was closed while it took a statement");
        goto failed;
    }
    l->statement = statement, l->rule = rule, l->masks = masks, l->masker = masker, l->batch = batch;
    statement = rule = masks = masker = batch = NULL; /* the lane's now */
    l->since = monotonic();
    l->pending = 1;
    result = call_write(write, data) < 0 ? -1 : 1;
    goto done;
failed:
    result = -1;
done:
    if (result == 0 && PyErr_Occurred()) PyErr_Clear(); /* the Python path redoes it, and raises */
    Py_XDECREF(key); Py_XDECREF(shape); Py_XDECREF(current); Py_XDECREF(stamp); Py_XDECREF(ok);
    Py_XDECREF(lead); Py_XDECREF(tail); Py_XDECREF(rule); Py_XDECREF(masks); Py_XDECREF(masker);
    Py_XDECREF(batch); Py_XDECREF(statement); Py_XDECREF(full); Py_XDECREF(write);
    return result;
}

/* -- the target's side: the whole plain answer to the statement in flight --------------- */

/* answers.plain_answer: where the closing ReadyForQuery starts, or -1. */
static Py_ssize_t plain_answer(const unsigned char *c, Py_ssize_t n, Py_ssize_t max_rows) {
    Py_ssize_t z = n - 6, pos = 0, rows = 0;
    int described = 0;
    if (z < 5 || c[z] != 'Z' || be32(c + z + 1) != 5) return -1;
    while (z - pos >= 5) {
        unsigned char kind = c[pos];
        unsigned int length = be32(c + pos + 1);
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (length < 4 || length > 0x7fffffffu || end > z) return -1;
        if (kind == 'D') {
            if (!described || ++rows > max_rows) return -1;
        } else if (kind == 'C') {
            return end == z ? z : -1;
        } else if (kind != 'T' || pos) {
            return -1;
        } else {
            described = 1;
        }
        pos = end;
    }
    return -1;
}

/* 1: answered; 0: not for the lane (nothing done, no exception); -1: an error after the
 * answer began to go out (the exception set). */
static int target_answer(Lane *l, PyObject *chunk) {
    if (!l->active || !l->pending || !PyBytes_CheckExact(chunk)) return 0;
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(chunk);
    Py_ssize_t n = PyBytes_GET_SIZE(chunk), max_rows = PyLong_AsSsize_t(l->sample_rows);
    if (max_rows < 0) {
        if (PyErr_Occurred()) PyErr_Clear();
        return 0;
    }
    Py_ssize_t z = plain_answer(c, n, max_rows);
    if (z < 0) return 0;
    unsigned char code = c[n - 1];
    if (code != 'I' && code != 'T' && code != 'E') return 0;
    int r = call_true(l->stream_at_rest);
    if (r != 1 || !l->active || !l->pending) {
        if (r < 0) PyErr_Clear();
        return 0;
    }
    /* Our own references: the callbacks below may close the lane or take its statement back. */
    PyObject *statement = Py_NewRef(l->statement), *rule = Py_NewRef(l->rule), *masks = Py_NewRef(l->masks),
             *masker = Py_NewRef(l->masker), *batch = Py_NewRef(l->batch), *write = Py_NewRef(l->write_client),
             *record = Py_NewRef(l->record), *answer_json = Py_NewRef(l->answer_json),
             *masked_answer = Py_NewRef(l->masked_answer), *answered = Py_NewRef(l->answered),
             *refuse_binary = Py_NewRef(l->refuse_binary), *sample_rows = Py_NewRef(l->sample_rows);
    PyObject *answer = NULL, *out = NULL, *elapsed = NULL, *status = NULL, *done = NULL;
    int result = 0;
    if (masker == Py_None) {
        if ((answer = PyBytes_FromStringAndSize((const char *)c, z)) == NULL) goto finish;
        out = Py_NewRef(chunk);
    } else { /* masked in Python, before anything is sent: an error leaves it to the Python path */
        PyObject *size = PyLong_FromSsize_t(z);
        if (size == NULL) goto finish;
        PyObject *argv[4] = {masker, chunk, size, refuse_binary};
        Py_INCREF(masked_answer);
        answer = PyObject_Vectorcall(masked_answer, argv, 4, NULL);
        Py_DECREF(masked_answer);
        Py_DECREF(size);
        if (answer == NULL) goto finish;
        if (!PyBytes_Check(answer)) {
            Py_CLEAR(answer);
            goto finish;
        }
        if ((out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(answer) + (n - z))) == NULL) goto finish;
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(answer), PyBytes_GET_SIZE(answer));
        memcpy(PyBytes_AS_STRING(out) + PyBytes_GET_SIZE(answer), c + z, n - z);
        if (!l->active || !l->pending || l->statement != statement) goto finish; /* no longer ours to answer */
    }
    /* From here on the answer is the client's: errors propagate. */
    result = -1;
    if (call_write(write, out) < 0) goto finish;
    if (l->active && (!l->pending || l->statement != statement)) {
        /* A callback handed the statement back while its answer went out: the Python path
         * would wait for an answer already sent. End the connection rather than guess. */
        PyErr_SetString(PyExc_RuntimeError, "the fast lane's statement was handed back during its answer");
        goto finish;
    }
    l->pending = 0;
    Py_CLEAR(l->statement); Py_CLEAR(l->rule); Py_CLEAR(l->masks); Py_CLEAR(l->masker); Py_CLEAR(l->batch);
    l->carried++;
    double ms = (double)(long long)((monotonic() - l->since) * 1e6) / 1000; /* int(s * 1e6) / 1000 */
    if (record != Py_None) { /* vectorcall: no argument tuple built for a call that collects *args */
        if ((elapsed = PyFloat_FromDouble(ms)) == NULL) goto finish;
        PyObject *argv[8] = {s_output, answer_json, statement, rule, masks, elapsed, answer, sample_rows};
        Py_INCREF(record);
        done = PyObject_Vectorcall(record, argv, 8, NULL);
        Py_DECREF(record);
        if (done == NULL) goto finish;
        Py_CLEAR(done);
    }
    if ((status = PyLong_FromLong(code)) == NULL) goto finish;
    PyObject *args[2] = {status, batch};
    Py_INCREF(answered);
    done = PyObject_Vectorcall(answered, args, 2, NULL); /* the stream's status; portals gone at 'I' */
    Py_DECREF(answered);
    if (done == NULL) goto finish;
    result = 1;
finish:
    if (result == 0 && PyErr_Occurred()) PyErr_Clear(); /* nothing sent: the Python path takes the chunk */
    Py_XDECREF(answer); Py_XDECREF(out); Py_XDECREF(elapsed); Py_XDECREF(status); Py_XDECREF(done);
    Py_DECREF(statement); Py_DECREF(rule); Py_DECREF(masks); Py_DECREF(masker); Py_DECREF(batch);
    Py_DECREF(write); Py_DECREF(record); Py_DECREF(answer_json); Py_DECREF(masked_answer); Py_DECREF(answered);
    Py_DECREF(refuse_binary); Py_DECREF(sample_rows);
    return result;
}

/* -- handing the statement in flight back to the Python path --------------------------- */

static int materialize(Lane *l) {
    if (!l->pending || !l->active) return 0;
    l->pending = 0;
    /* Taken out of the lane first: hand_back may close it. */
    PyObject *fn = Py_NewRef(l->hand_back), *statement = l->statement, *rule = l->rule, *masks = l->masks,
             *masker = l->masker, *batch = l->batch;
    l->statement = l->rule = l->masks = l->masker = l->batch = NULL;
    PyObject *r = PyObject_CallFunction(fn, "OOOOdO", statement, rule, masks, masker, l->since, batch);
    Py_DECREF(fn); Py_DECREF(statement); Py_DECREF(rule); Py_DECREF(masks); Py_DECREF(masker); Py_DECREF(batch);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* -- Lane ------------------------------------------------------------------------------ */

static char *lane_kwlist[] = {"at_rest", "next_batch", "write_target", "write_client", "shapes", "stamp",
                              "allowed_again", "record", "answer_json", "masked_answer", "hand_back",
                              "stream_at_rest", "answered", "refuse_binary", "sample_rows", NULL};

#define LANE_FIELDS(self)                                                                                          \
    {&(self)->at_rest, &(self)->next_batch, &(self)->write_target, &(self)->write_client, &(self)->shapes,          \
     &(self)->stamp, &(self)->allowed_again, &(self)->record, &(self)->answer_json, &(self)->masked_answer,        \
     &(self)->hand_back, &(self)->stream_at_rest, &(self)->answered, &(self)->refuse_binary, &(self)->sample_rows}

static int Lane_init(Lane *self, PyObject *args, PyObject *kwds) {
    PyObject *o[N_FIELDS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!OOOOOOOOOO!:Lane", lane_kwlist, &o[0], &o[1], &o[2], &o[3],
                                     &PyDict_Type, &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11],
                                     &o[12], &o[13], &PyLong_Type, &o[14]))
        return -1;
    PyObject **slots[N_FIELDS] = LANE_FIELDS(self);
    for (int i = 0; i < N_FIELDS; i++) Py_XSETREF(*slots[i], Py_NewRef(o[i]));
    self->active = 1;
    return 0;
}

static int Lane_traverse(Lane *self, visitproc visit, void *arg) {
    PyObject **slots[N_FIELDS] = LANE_FIELDS(self);
    for (int i = 0; i < N_FIELDS; i++) Py_VISIT(*slots[i]);
    Py_VISIT(self->statement); Py_VISIT(self->rule); Py_VISIT(self->masks); Py_VISIT(self->masker);
    Py_VISIT(self->batch);
    return 0;
}

static int Lane_clear(Lane *self) {
    self->active = 0;
    self->pending = 0;
    PyObject **slots[N_FIELDS] = LANE_FIELDS(self);
    for (int i = 0; i < N_FIELDS; i++) Py_CLEAR(*slots[i]);
    Py_CLEAR(self->statement); Py_CLEAR(self->rule); Py_CLEAR(self->masks); Py_CLEAR(self->masker);
    Py_CLEAR(self->batch);
    return 0;
}

static void Lane_dealloc(Lane *self) {
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lane_materialize(Lane *self, PyObject *unused) {
    if (materialize(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lane_close(Lane *self, PyObject *unused) {
    /* The conversation ended: nothing more takes the lane, and the cycle is broken. */
    Lane_clear(self);
    Py_RETURN_NONE;
}

static PyObject *Lane_get_pending(Lane *self, void *closure) { return PyBool_FromLong(self->pending); }
static PyObject *Lane_get_active(Lane *self, void *closure) { return PyBool_FromLong(self->active); }
static PyObject *Lane_get_carried(Lane *self, void *closure) { return PyLong_FromSsize_t(self->carried); }

static PyMethodDef Lane_methods[] = {
    {"materialize", (PyCFunction)Lane_materialize, METH_NOARGS,
     "Hand the statement in flight, if any, back to the Python path (TargetStream.expect)."},
    {"close", (PyCFunction)Lane_close, METH_NOARGS, "Stop taking messages and drop every reference."},
    {NULL}};

static PyGetSetDef Lane_getset[] = {
    {"pending", (getter)Lane_get_pending, NULL, "a statement is in flight on the lane", NULL},
    {"active", (getter)Lane_get_active, NULL, "the lane takes messages", NULL},
    {"carried", (getter)Lane_get_carried, NULL, "statements the lane relayed, question and whole answer", NULL},
    {NULL}};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "app.relay.postgres._fastlane.Lane",
    .tp_doc = "One conversation's fast lane (app/relay/postgres/fastlane.py).",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_methods = Lane_methods,
    .tp_getset = Lane_getset,
};

/* -- WireBase: data_received, for app.relay.postgres.wire.Wire ----------------------------------- */

static PyObject *WireBase_data_received(WireBase *self, PyObject *data) {
    Lane *lane = (Lane *)self->lane;
    if (lane != NULL) {
        Py_INCREF(lane);
        int r = 0;
        r = self->side ? target_answer(lane, data) : client_query(lane, data);
        if (r == 0) r = materialize(lane) < 0 ? -1 : 0; /* not the lane's: the Python path takes over */
        Py_DECREF(lane);
        if (r > 0) Py_RETURN_NONE;
        if (r < 0) return NULL;
    }
    return PyObject_CallMethodOneArg((PyObject *)self, s_received, data);
}

static int WireBase_traverse(WireBase *self, visitproc visit, void *arg) {
    Py_VISIT(self->lane); /* Wire, a heap subtype, visits its type and dict itself */
    return 0;
}

static int WireBase_clear(WireBase *self) {
    Py_CLEAR(self->lane);
    return 0;
}

static void WireBase_dealloc(WireBase *self) {
    /* Wire's own dealloc (subtype_dealloc) has untracked it and drops the type's reference */
    PyObject_GC_UnTrack(self);
    WireBase_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *WireBase_get_lane(WireBase *self, void *closure) {
    return Py_NewRef(self->lane ? self->lane : Py_None);
}

static int WireBase_set_lane(WireBase *self, PyObject *value, void *closure) {
    if (value != NULL && value != Py_None && !PyObject_TypeCheck(value, &LaneType)) {
        PyErr_SetString(PyExc_TypeError, "lane must be a Lane or None");
        return -1;
    }
    Py_XSETREF(self->lane, value == NULL || value == Py_None ? NULL : Py_NewRef(value));
    return 0;
}

static PyMethodDef WireBase_methods[] = {
    {"data_received", (PyCFunction)WireBase_data_received, METH_O,
     "The fast lane's messages here; everything else to received()."},
    {NULL}};

static PyMemberDef WireBase_members[] = {
    {"lane_side", T_INT, offsetof(WireBase, side), 0, "0: the client's wire, 1: the target's"}, {NULL}};

static PyGetSetDef WireBase_getset[] = {{"lane", (getter)WireBase_get_lane, (setter)WireBase_set_lane,
                                         "the conversation's Lane, or None", NULL},
                                        {NULL}};

static PyTypeObject WireBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "app.relay.postgres._fastlane.WireBase",
    .tp_doc = "The base of Wire: data_received in C, for the fast lane.",
    .tp_basicsize = sizeof(WireBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)WireBase_traverse,
    .tp_clear = (inquiry)WireBase_clear,
    .tp_dealloc = (destructor)WireBase_dealloc,
    .tp_methods = WireBase_methods,
    .tp_members = WireBase_members,
    .tp_getset = WireBase_getset,
};

/* -- the module ------------------------------------------------------------------------ */

static PyObject *py_shape_key(PyObject *mod, PyObject *text) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_ValueError, "shape_key takes an ASCII str");
        return NULL;
    }
    return shape_key(PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
}

static PyObject *py_plain_answer(PyObject *mod, PyObject *args) {
    Py_buffer chunk;
    Py_ssize_t max_rows;
    if (!PyArg_ParseTuple(args, "y*n", &chunk, &max_rows)) return NULL;
    Py_ssize_t z = plain_answer(chunk.buf, chunk.len, max_rows);
    PyBuffer_Release(&chunk);
    return PyLong_FromSsize_t(z);
}

static PyMethodDef module_methods[] = {
    {"shape_key", py_shape_key, METH_O, "NUMBER.sub('0', text) for an ASCII text (for tests)."},
    {"plain_answer", py_plain_answer, METH_VARARGS, "answers.plain_answer in C (for tests)."},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "app.relay.postgres._fastlane", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastlane(void) {
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {{&s_stamp, "stamp"}, {&s_lead, "lead"}, {&s_tail, "tail"}, {&s_rule, "rule"},
                 {&s_mask_names, "mask_names"}, {&s_masker, "masker"}, {&s_output, "output"},
                 {&s_received, "received"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL) return NULL;
    if (PyType_Ready(&LaneType) < 0 || PyType_Ready(&WireBaseType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddObjectRef(m, "WireBase", (PyObject *)&WireBaseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
