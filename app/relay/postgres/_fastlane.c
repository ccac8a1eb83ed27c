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
 * Errors before anything is sent fall back to the Python path, which redoes the work and
 * fails closed as it always does; an error after a write propagates to the event loop,
 * which closes the connection.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#define MAX_TEXT 8192 /* app.sql.cache.MAX_TEXT: longer texts are never remembered */

typedef struct {
    PyObject_HEAD
    int active;
    /* the conversation, set once */
    PyObject *client, *target, *conv, *stream, *shapes, *portals;
    PyObject *stamp, *allowed_again, *record, *answer_json, *masked_answer, *hand_back, *target_idle;
    PyObject *refuse_binary, *sample_rows, *status_i, *status_t, *status_e;
    /* the statement in flight on the lane */
    int pending;
    PyObject *statement, *rule, *masks, *masker, *batch;
    double since;
} Lane;

typedef struct {
    PyObject_HEAD
    PyObject *lane; /* a Lane, or NULL */
    int side;       /* 0: the client's wire, 1: the target's */
} WireBase;

static PyObject *s_pos, *s_buf, *s_extra_len, *s_waiting, *s_skipping, *s_out, *s_queue, *s_write_paused,
    *s_lost, *s_encoding, *s_stamp, *s_lead, *s_tail, *s_rule, *s_mask_names, *s_masker, *s_batch,
    *s_transport, *s_write, *s_skip, *s_partial, *s_held, *s_result, *s_handlers, *s__handlers, *s_status,
    *s_output, *s_data_received, *s_done_future, *one;

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

/* attribute truth, -1 on error */
static int attr_true(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static int attr_is(PyObject *o, PyObject *name, PyObject *what) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int r = v == what;
    Py_DECREF(v);
    return r;
}

static int attr_len(PyObject *o, PyObject *name) { /* length, -1 on error */
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    Py_ssize_t n = PyObject_Length(v);
    Py_DECREF(v);
    return n < 0 ? -1 : (int)(n > 1 ? 2 : n);
}

static Py_ssize_t attr_ssize(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    Py_ssize_t n = PyLong_Check(v) ? PyLong_AsSsize_t(v) : -1;
    Py_DECREF(v);
    return n;
}

static int wire_write(PyObject *wire, PyObject *data) { /* Wire.write: nothing once lost */
    int lost = attr_true(wire, s_lost);
    if (lost != 0) return lost < 0 ? -1 : 0;
    PyObject *transport = PyObject_GetAttr(wire, s_transport);
    if (transport == NULL) return -1;
    PyObject *r = PyObject_CallMethodOneArg(transport, s_write, data);
    Py_DECREF(transport);
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

static int conversation_idle(Lane *l, PyObject *wire) {
    /* The Python path has nothing buffered, waiting or in flight. 1, 0, or -1 (error). */
    Py_ssize_t pos = attr_ssize(wire, s_pos), extra = attr_ssize(wire, s_extra_len);
    if (pos < 0 || extra != 0) return extra < 0 ? -1 : 0;
    PyObject *buf = PyObject_GetAttr(wire, s_buf);
    if (buf == NULL) return -1;
    Py_ssize_t n = PyObject_Length(buf);
    Py_DECREF(buf);
    if (n < 0 || pos < n) return n < 0 ? -1 : 0; /* unread bytes: the Python path takes them */
    int r;
    if ((r = attr_is(l->conv, s_waiting, Py_None)) != 1) return r;
    if ((r = attr_true(l->conv, s_skipping)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_len(l->conv, s_out)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_len(l->stream, s_queue)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_true(l->target, s_write_paused)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_true(l->target, s_lost)) != 0) return r < 0 ? -1 : 0;
    PyObject *done = PyObject_GetAttr(l->conv, s_done_future);
    if (done == NULL) return -1;
    PyObject *ended = PyObject_CallMethodNoArgs(done, s_done_future);
    Py_DECREF(done);
    if (ended == NULL) return -1;
    r = ended == Py_False;
    Py_DECREF(ended);
    if (r != 1) return 0;
    PyObject *enc = PyObject_GetAttr(l->conv, s_encoding);
    if (enc == NULL) return -1;
    r = PyUnicode_Check(enc) && PyUnicode_CompareWithASCIIString(enc, "utf-8") == 0;
    Py_DECREF(enc);
    return r;
}

/* 1: relayed; 0: not for the lane (nothing done); -1: an error after the write began. */
static int client_query(Lane *l, PyObject *wire, PyObject *data) {
    if (l->pending || !PyBytes_CheckExact(data)) return 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), tlen = n - 6;
    if (n < 6 || p[0] != 'Q' || (Py_ssize_t)be32(p + 1) + 1 != n || p[n - 1] != 0 || tlen > MAX_TEXT) return 0;
    const unsigned char *text = p + 5;
    for (Py_ssize_t i = 0; i < tlen; i++)
        if (text[i] >= 0x80 || text[i] == 0) return 0;
    int r = conversation_idle(l, wire);
    if (r <= 0) goto not_ours;

    PyObject *key = shape_key(text, tlen), *shape = NULL, *current = NULL, *stamp = NULL, *ok = NULL;
    PyObject *lead = NULL, *tail = NULL, *batch = NULL, *statement = NULL, *full = NULL;
    int result = 0;
    if (key == NULL) goto done;
    shape = PyDict_GetItemWithError(l->shapes, key);
    if (shape == NULL) goto done;
    Py_INCREF(shape);
    if ((current = PyObject_CallNoArgs(l->stamp)) == NULL || current == Py_None) goto done;
    if ((stamp = PyObject_GetAttr(shape, s_stamp)) == NULL) goto done;
    if (PyObject_RichCompareBool(stamp, current, Py_EQ) != 1) goto done; /* Python clears stale shapes */
    if ((lead = PyObject_GetAttr(shape, s_lead)) == NULL || (tail = PyObject_GetAttr(shape, s_tail)) == NULL)
        goto done;
    Py_ssize_t a = PyLong_AsSsize_t(lead), b = tlen - PyLong_AsSsize_t(tail);
    if (PyErr_Occurred() || a < 0 || b < a || b > tlen) goto done;
    if ((ok = PyObject_CallOneArg(l->allowed_again, shape)) == NULL || PyObject_IsTrue(ok) != 1) goto done;

    /* Allowed: from here on the statement is the lane's. */
    if ((full = PyUnicode_FromStringAndSize((const char *)text, tlen)) == NULL ||
        (statement = PyUnicode_Substring(full, a, b)) == NULL)
        goto failed;
    PyObject *old = PyObject_GetAttr(l->conv, s_batch);
    if (old == NULL) goto failed;
    batch = PyNumber_Add(old, one);
    Py_DECREF(old);
    if (batch == NULL || PyObject_SetAttr(l->conv, s_batch, batch) < 0) goto failed;
    PyObject *rule = PyObject_GetAttr(shape, s_rule), *masks = PyObject_GetAttr(shape, s_mask_names),
             *masker = PyObject_GetAttr(shape, s_masker);
    if (rule == NULL || masks == NULL || masker == NULL) {
        Py_XDECREF(rule);
        Py_XDECREF(masks);
        Py_XDECREF(masker);
        goto failed;
    }
    l->statement = statement, l->rule = rule, l->masks = masks, l->masker = masker, l->batch = batch;
    statement = batch = NULL;
    l->since = monotonic();
    l->pending = 1;
    result = wire_write(l->target, data) < 0 ? -1 : 1;
    goto done;
failed:
    result = -1;
done:
    Py_XDECREF(key); Py_XDECREF(shape); Py_XDECREF(current); Py_XDECREF(stamp); Py_XDECREF(ok);
    Py_XDECREF(lead); Py_XDECREF(tail); Py_XDECREF(batch); Py_XDECREF(statement); Py_XDECREF(full);
    if (result == 0 && PyErr_Occurred()) PyErr_Clear(); /* the Python path redoes it, and raises */
    return result;
not_ours:
    if (r < 0) PyErr_Clear();
    return 0;
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

static int stream_ready(Lane *l) { /* TargetStream._whole_plain_answer's conditions */
    int r;
    if ((r = attr_len(l->stream, s_queue)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_true(l->stream, s_skip)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_is(l->stream, s_partial, Py_None)) != 1) return r;
    if ((r = attr_len(l->stream, s_held)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_is(l->stream, s_result, Py_None)) != 1) return r;
    PyObject *mine = PyObject_GetAttr(l->stream, s__handlers);
    if (mine == NULL) return -1;
    r = attr_is(l->stream, s_handlers, mine);
    Py_DECREF(mine);
    return r;
}

static int target_answer(Lane *l, PyObject *chunk) {
    if (!l->pending || !PyBytes_CheckExact(chunk)) return 0;
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(chunk);
    Py_ssize_t n = PyBytes_GET_SIZE(chunk), max_rows = PyLong_AsSsize_t(l->sample_rows);
    if (max_rows < 0) {
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t z = plain_answer(c, n, max_rows);
    if (z < 0) return 0;
    PyObject *status = c[n - 1] == 'I' ? l->status_i : c[n - 1] == 'T' ? l->status_t : c[n - 1] == 'E' ? l->status_e : NULL;
    if (status == NULL) return 0;
    int r = stream_ready(l);
    if (r <= 0) {
        if (r < 0) PyErr_Clear();
        return 0;
    }
    PyObject *answer, *out;
    if (l->masker == Py_None) {
        if ((answer = PyBytes_FromStringAndSize((const char *)c, z)) == NULL) goto fallback;
        out = Py_NewRef(chunk);
    } else { /* masked in Python, before anything is sent: an error leaves it to the Python path */
        PyObject *size = PyLong_FromSsize_t(z);
        if (size == NULL) goto fallback;
        PyObject *argv[4] = {l->masker, chunk, size, l->refuse_binary};
        answer = PyObject_Vectorcall(l->masked_answer, argv, 4, NULL);
        Py_DECREF(size);
        if (answer == NULL || !PyBytes_Check(answer)) {
            Py_XDECREF(answer);
            goto fallback;
        }
        out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(answer) + (n - z));
        if (out == NULL) {
            Py_DECREF(answer);
            goto fallback;
        }
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(answer), PyBytes_GET_SIZE(answer));
        memcpy(PyBytes_AS_STRING(out) + PyBytes_GET_SIZE(answer), c + z, n - z);
    }
    r = wire_write(l->client, out);
    Py_DECREF(out);
    if (r < 0) {
        Py_DECREF(answer);
        return -1;
    }
    PyObject *statement = l->statement, *rule = l->rule, *masks = l->masks, *masker = l->masker,
             *batch = l->batch;
    l->statement = l->rule = l->masks = l->masker = l->batch = NULL;
    l->pending = 0;
    double ms = (double)(long long)((monotonic() - l->since) * 1e6) / 1000; /* int(s * 1e6) / 1000 */
    int failed = 0;
    if (l->record != Py_None) { /* vectorcall: no argument tuple built for a call that collects *args */
        PyObject *elapsed = PyFloat_FromDouble(ms), *done = NULL;
        if (elapsed != NULL) {
            PyObject *argv[8] = {s_output, l->answer_json, statement, rule, masks, elapsed, answer, l->sample_rows};
            done = PyObject_Vectorcall(l->record, argv, 8, NULL);
            Py_DECREF(elapsed);
        }
        failed |= done == NULL;
        Py_XDECREF(done);
    }
    failed |= PyObject_SetAttr(l->stream, s_status, status) < 0;
    if (!failed && status == l->status_i && PyDict_GET_SIZE(l->portals)) {
        PyObject *done = PyObject_CallOneArg(l->target_idle, batch);
        failed |= done == NULL;
        Py_XDECREF(done);
    }
    Py_DECREF(statement); Py_DECREF(rule); Py_DECREF(masks); Py_DECREF(masker); Py_DECREF(batch);
    Py_DECREF(answer);
    return failed ? -1 : 1;
fallback:
    PyErr_Clear();
    return 0;
}

/* -- handing the statement in flight back to the Python path --------------------------- */

static int materialize(Lane *l) {
    if (!l->pending) return 0;
    l->pending = 0;
    PyObject *r = PyObject_CallFunction(l->hand_back, "OOOOdO", l->statement, l->rule, l->masks, l->masker,
                                        l->since, l->batch);
    Py_CLEAR(l->statement); Py_CLEAR(l->rule); Py_CLEAR(l->masks); Py_CLEAR(l->masker); Py_CLEAR(l->batch);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* -- Lane ------------------------------------------------------------------------------ */

static char *lane_kwlist[] = {"client", "target", "conv", "stream", "shapes", "portals", "stamp", "allowed_again",
                              "record", "answer_json", "masked_answer", "hand_back", "target_idle",
                              "refuse_binary", "sample_rows", "statuses", NULL};

static int Lane_init(Lane *self, PyObject *args, PyObject *kwds) {
    PyObject *o[15], *statuses;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!O!OOOOOOOOO!O!:Lane", lane_kwlist, &o[0], &o[1], &o[2],
                                     &o[3], &PyDict_Type, &o[4], &PyDict_Type, &o[5], &o[6], &o[7], &o[8], &o[9],
                                     &o[10], &o[11], &o[12], &o[13], &PyLong_Type, &o[14], &PyDict_Type, &statuses))
        return -1;
    PyObject **slots[] = {&self->client, &self->target, &self->conv, &self->stream, &self->shapes, &self->portals,
                          &self->stamp, &self->allowed_again, &self->record, &self->answer_json,
                          &self->masked_answer, &self->hand_back, &self->target_idle, &self->refuse_binary,
                          &self->sample_rows};
    for (int i = 0; i < 15; i++) Py_XSETREF(*slots[i], Py_NewRef(o[i]));
    PyObject **status[] = {&self->status_i, &self->status_t, &self->status_e};
    const char codes[] = "ITE";
    for (int i = 0; i < 3; i++) {
        PyObject *code = PyLong_FromLong(codes[i]);
        if (code == NULL) return -1;
        PyObject *v = PyDict_GetItemWithError(statuses, code);
        Py_DECREF(code);
        if (v == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "statuses needs I, T and E");
            return -1;
        }
        Py_XSETREF(*status[i], Py_NewRef(v));
    }
    self->active = 1;
    return 0;
}

static int Lane_traverse(Lane *self, visitproc visit, void *arg) {
    Py_VISIT(self->client); Py_VISIT(self->target); Py_VISIT(self->conv); Py_VISIT(self->stream);
    Py_VISIT(self->shapes); Py_VISIT(self->portals); Py_VISIT(self->stamp); Py_VISIT(self->allowed_again);
    Py_VISIT(self->record); Py_VISIT(self->answer_json); Py_VISIT(self->masked_answer); Py_VISIT(self->hand_back);
    Py_VISIT(self->target_idle); Py_VISIT(self->refuse_binary); Py_VISIT(self->sample_rows);
    Py_VISIT(self->status_i); Py_VISIT(self->status_t); Py_VISIT(self->status_e);
    Py_VISIT(self->statement); Py_VISIT(self->rule); Py_VISIT(self->masks); Py_VISIT(self->masker);
    Py_VISIT(self->batch);
    return 0;
}

static int Lane_clear(Lane *self) {
    self->active = 0;
    self->pending = 0;
    Py_CLEAR(self->client); Py_CLEAR(self->target); Py_CLEAR(self->conv); Py_CLEAR(self->stream);
    Py_CLEAR(self->shapes); Py_CLEAR(self->portals); Py_CLEAR(self->stamp); Py_CLEAR(self->allowed_again);
    Py_CLEAR(self->record); Py_CLEAR(self->answer_json); Py_CLEAR(self->masked_answer); Py_CLEAR(self->hand_back);
    Py_CLEAR(self->target_idle); Py_CLEAR(self->refuse_binary); Py_CLEAR(self->sample_rows);
    Py_CLEAR(self->status_i); Py_CLEAR(self->status_t); Py_CLEAR(self->status_e);
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
    if (self->pending && self->hand_back != NULL && materialize(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lane_close(Lane *self, PyObject *unused) {
    /* The conversation ended: nothing more takes the lane, and the cycle is broken. */
    Lane_clear(self);
    Py_RETURN_NONE;
}

static PyObject *Lane_get_pending(Lane *self, void *closure) { return PyBool_FromLong(self->pending); }
static PyObject *Lane_get_active(Lane *self, void *closure) { return PyBool_FromLong(self->active); }

static PyMethodDef Lane_methods[] = {
    {"materialize", (PyCFunction)Lane_materialize, METH_NOARGS,
     "Hand the statement in flight, if any, back to the Python path (TargetStream.expect)."},
    {"close", (PyCFunction)Lane_close, METH_NOARGS, "Stop taking messages and drop every reference."},
    {NULL}};

static PyGetSetDef Lane_getset[] = {
    {"pending", (getter)Lane_get_pending, NULL, "a statement is in flight on the lane", NULL},
    {"active", (getter)Lane_get_active, NULL, "the lane takes messages", NULL},
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
        if (lane->active) r = self->side ? target_answer(lane, data) : client_query(lane, (PyObject *)self, data);
        if (r == 0 && lane->pending) r = materialize(lane) < 0 ? -1 : 0;
        Py_DECREF(lane);
        if (r > 0) Py_RETURN_NONE;
        if (r < 0) return NULL;
    }
    return PyObject_CallMethodOneArg((PyObject *)self, s_data_received, data);
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
     "The fast lane's messages here; everything else to _data_received."},
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
    } names[] = {{&s_pos, "_pos"}, {&s_buf, "_buf"}, {&s_extra_len, "_extra_len"}, {&s_waiting, "_waiting"},
                 {&s_skipping, "_skipping"}, {&s_out, "_out"}, {&s_queue, "queue"},
                 {&s_write_paused, "write_paused"}, {&s_lost, "lost"}, {&s_encoding, "encoding"},
                 {&s_stamp, "stamp"}, {&s_lead, "lead"}, {&s_tail, "tail"}, {&s_rule, "rule"},
                 {&s_mask_names, "mask_names"}, {&s_masker, "masker"}, {&s_batch, "batch"},
                 {&s_transport, "transport"}, {&s_write, "write"}, {&s_skip, "_skip"}, {&s_partial, "_partial"},
                 {&s_held, "_held"}, {&s_result, "_result"}, {&s_handlers, "handlers"},
                 {&s__handlers, "_handlers"}, {&s_status, "status"}, {&s_output, "output"},
                 {&s_data_received, "_data_received"}, {&s_done_future, "done"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL) return NULL;
    if ((one = PyLong_FromLong(1)) == NULL) return NULL;
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
