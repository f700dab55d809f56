/* uvcffi._accel: the CPython-only accelerator for the loop's hottest Python.
 *
 * cffi cannot make a Python object or call one without the costs DESIGN.md lists, and an
 * asyncio.Handle built in Python costs ~0.45 us.  This module, written against the CPython
 * C API as CPython's own _asyncio is, does these things for one loop and nothing else:
 *   - call_soon / call_soon_threadsafe / call_later / call_at: fill the slots of uvcffi's
 *     asyncio.Handle / TimerHandle subclasses (loop/_handles.py) directly;
 *   - run_once: one ordinary iteration (poll, ready callbacks, events, due timers);
 *   - run_handles: run a batch of ready handles, each in its context;
 *   - dispatch: hand the C core's event records of one iteration to their slot owners;
 *   - create_future, and a few one-line methods of the loop and of stream transports
 *     (write() of bytes, is_closing(), get_debug(): SlotMethod and StreamWrite).
 * It follows the pure-Python code of loop/_core.py line for line (that code stays, PyPy
 * runs it, and the suite runs on CPython in both modes: UVCFFI_PURE_PYTHON=1).  Anything
 * unusual (debug mode, a closed loop, an argument that is not a plain int or float) goes
 * back to that Python code, so error messages and slow paths exist once.
 *
 * Slots are written at the offsets their member descriptors give, read once at set-up:
 * the accelerator refuses to start when a class does not have the slots it knows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "../uvc_core.h"

typedef struct {
    PyObject_HEAD
    PyObject *loop_ref;          /* weakref: the loop owns this object, not the reverse */
    uvc_loop_t *uv;
    int (*wakeup)(uvc_loop_t *);
    PyTypeObject *handle_type;   /* loop/_handles._Handle */
    PyTypeObject *timer_type;    /* loop/_handles._TimerHandle */
    PyObject *ready, *ready_append, *ready_popleft;  /* loop._ready, its append, popleft */
    PyObject *run_once_py;       /* CoreLoop._run_once: the iteration in Python */
    int (*run_uv)(uvc_loop_t *, int64_t);  /* uvc_run_once */
    long long compact_min, max_timeout_ms;
    PyObject *fallback;          /* dict: the Python paths (see Accel_init) */
    PyObject *call_soon_py, *call_soon_threadsafe_py, *call_later_py, *call_at_py;
    PyObject *callback_failed, *event_failed, *keep_undispatched, *handle_signal;
    PyObject *flush_new_timers, *poster_yield, *call_python, *future_type, *task_type;
    /* offsets of the loop's slots */
    Py_ssize_t l_careful, l_closed, l_polling, l_slots, l_new_timers, l_callbacks_run;
    Py_ssize_t l_backlog, l_timers, l_cancelled_count, l_stopping, l_runs, l_debug;
    /* offsets of the handles' slots */
    Py_ssize_t h_callback, h_args, h_cancelled, h_loop, h_source_traceback, h_repr, h_context;
    Py_ssize_t t_when, t_scheduled;
} Accel;

static PyObject *s_uv_read, *s_uv_read_at, *s_uv_readable, *s_uv_event, *s_uv_closed;
static PyObject *s_uv_recv, *s_uv_recv_ended;

/* Set up by module functions below (the C core's functions, called by address). */
static int64_t (*c_read_into)(uvc_loop_t *, int, char *, size_t);
static char *(*c_recv_buffer)(uvc_loop_t *);

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))
/* loop/_core.py's _POSTER_YIELD_BACKLOG */
#define POSTER_YIELD_BACKLOG 4096

static Py_ssize_t member_offset(PyObject *type, const char *name) {
    PyObject *d = PyObject_GetAttrString(type, name);
    if (d == NULL)
        return -1;
    if (!PyObject_TypeCheck(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%R.%s is not an object slot", type, name);
        return -1;
    }
    Py_ssize_t off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return off;
}

/* The loop (a new reference), or NULL with RuntimeError once it is gone. */
static PyObject *get_loop(Accel *self) {
    PyObject *loop;
#if PY_VERSION_HEX >= 0x030D0000
    if (PyWeakref_GetRef(self->loop_ref, &loop) < 0)
        return NULL;
#else
    loop = PyWeakref_GetObject(self->loop_ref);
    if (loop == Py_None)
        loop = NULL;
    Py_XINCREF(loop);
#endif
    if (loop == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
    return loop;
}

/* time.monotonic(), computed as CPython computes it. */
static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (ns % 1000000000LL == 0)
        return (double)(ns / 1000000000LL);
    return (double)ns / 1e9;
}

/* ------------------------------------------------------------------ set-up */

static int Accel_traverse(Accel *self, visitproc visit, void *arg) {
    Py_VISIT(self->loop_ref);
    Py_VISIT(self->handle_type);
    Py_VISIT(self->timer_type);
    Py_VISIT(self->ready);
    Py_VISIT(self->ready_append);
    Py_VISIT(self->ready_popleft);
    Py_VISIT(self->fallback);
    return 0;
}

static int Accel_clear(Accel *self) {
    Py_CLEAR(self->loop_ref);
    Py_CLEAR(self->handle_type);
    Py_CLEAR(self->timer_type);
    Py_CLEAR(self->ready);
    Py_CLEAR(self->ready_append);
    Py_CLEAR(self->ready_popleft);
    Py_CLEAR(self->fallback);
    /* borrowed from fallback */
    self->call_soon_py = self->call_soon_threadsafe_py = self->call_later_py = NULL;
    self->call_at_py = self->callback_failed = self->event_failed = NULL;
    self->keep_undispatched = self->handle_signal = self->flush_new_timers = NULL;
    self->poster_yield = self->call_python = self->future_type = self->run_once_py = NULL;
    self->task_type = NULL;
    return 0;
}

static void Accel_dealloc(Accel *self) {
    PyObject_GC_UnTrack(self);
    Accel_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *fallback_item(PyObject *fallback, const char *name) {
    PyObject *v = PyDict_GetItemString(fallback, name); /* borrowed */
    if (v == NULL)
        PyErr_Format(PyExc_KeyError, "accelerator fallback %s missing", name);
    return v;
}

/* Accel(loop, loop_type, handle_type, timer_type, uv_address, wakeup_address, fallback)
 * fallback: {"call_soon": ..., "call_soon_threadsafe": ..., "call_later": ...,
 *            "call_at": ..., "callback_failed": ..., "event_failed": ...,
 *            "keep_undispatched": ..., "handle_signal": ..., "flush_new_timers": ...,
 *            "poster_yield": ..., "call_python": ..., "future_type": ...,
 *            "task_type": ..., "run_once": ..., and run_once's numbers (see below)}
 * (functions taking the loop first: the accelerator's slow paths, in Python; and the
 * class create_future() makes). */
static int Accel_init(Accel *self, PyObject *args, PyObject *kw) {
    PyObject *loop, *loop_type, *handle_type, *timer_type, *fallback;
    unsigned long long uv_addr, wakeup_addr;
    if (!PyArg_ParseTuple(args, "OOO!O!KKO!", &loop, &loop_type, &PyType_Type, &handle_type,
                          &PyType_Type, &timer_type, &uv_addr, &wakeup_addr,
                          &PyDict_Type, &fallback))
        return -1;
    Accel_clear(self);
    if ((self->loop_ref = PyWeakref_NewRef(loop, NULL)) == NULL)
        return -1;
    self->uv = (uvc_loop_t *)(uintptr_t)uv_addr;
    self->wakeup = (int (*)(uvc_loop_t *))(uintptr_t)wakeup_addr;
    self->handle_type = (PyTypeObject *)Py_NewRef(handle_type);
    self->timer_type = (PyTypeObject *)Py_NewRef(timer_type);
    self->fallback = Py_NewRef(fallback);
#define FB(field, name) if ((self->field = fallback_item(fallback, name)) == NULL) return -1
    FB(call_soon_py, "call_soon");
    FB(call_soon_threadsafe_py, "call_soon_threadsafe");
    FB(call_later_py, "call_later");
    FB(call_at_py, "call_at");
    FB(callback_failed, "callback_failed");
    FB(event_failed, "event_failed");
    FB(keep_undispatched, "keep_undispatched");
    FB(handle_signal, "handle_signal");
    FB(flush_new_timers, "flush_new_timers");
    FB(poster_yield, "poster_yield");
    FB(call_python, "call_python");
    FB(future_type, "future_type");
    FB(task_type, "task_type");
    FB(run_once_py, "run_once");
#undef FB
    /* run_once's numbers: uvc_run_once's address and loop/_core.py's constants */
    static const char *const numbers[] = {"uvc_run_once_address", "compact_min_cancelled",
                                          "max_timeout_ms"};
    long long values[3];
    for (int i = 0; i < 3; i++) {
        PyObject *v = fallback_item(fallback, numbers[i]);
        if (v == NULL || ((values[i] = PyLong_AsLongLong(v)) == -1 && PyErr_Occurred()))
            return -1;
    }
    self->run_uv = (int (*)(uvc_loop_t *, int64_t))(uintptr_t)values[0];
    self->compact_min = values[1];
    self->max_timeout_ms = values[2];
#define OFF(field, type, name) if ((self->field = member_offset(type, name)) < 0) return -1
    OFF(l_careful, loop_type, "_careful");
    OFF(l_closed, loop_type, "_closed");
    OFF(l_polling, loop_type, "_polling");
    OFF(l_slots, loop_type, "_slots");
    OFF(l_new_timers, loop_type, "_new_timers");
    OFF(l_callbacks_run, loop_type, "_callbacks_run");
    OFF(l_backlog, loop_type, "_backlog");
    OFF(l_timers, loop_type, "_timers");
    OFF(l_cancelled_count, loop_type, "_timer_cancelled_count");
    OFF(l_stopping, loop_type, "_stopping");
    OFF(l_runs, loop_type, "_runs");
    OFF(l_debug, loop_type, "_debug");
    OFF(h_callback, handle_type, "_callback");
    OFF(h_args, handle_type, "_args");
    OFF(h_cancelled, handle_type, "_cancelled");
    OFF(h_loop, handle_type, "_loop");
    OFF(h_source_traceback, handle_type, "_source_traceback");
    OFF(h_repr, handle_type, "_repr");
    OFF(h_context, handle_type, "_context");
    OFF(t_when, timer_type, "_when");
    OFF(t_scheduled, timer_type, "_scheduled");
#undef OFF
    /* One set of offsets serves both kinds: asyncio's TimerHandle inherits Handle's slots. */
    static const char *const shared[] = {"_callback", "_args", "_cancelled", "_loop",
                                         "_source_traceback", "_repr", "_context"};
    const Py_ssize_t offsets[] = {self->h_callback, self->h_args, self->h_cancelled,
                                  self->h_loop, self->h_source_traceback, self->h_repr,
                                  self->h_context};
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        Py_ssize_t off = member_offset(timer_type, shared[i]);
        if (off < 0)
            return -1;
        if (off != offsets[i]) {
            PyErr_Format(PyExc_TypeError, "%R.%s is not where %R has it", timer_type,
                         shared[i], handle_type);
            return -1;
        }
    }
    PyObject *ready = PyObject_GetAttrString(loop, "_ready");
    if (ready == NULL)
        return -1;
    self->ready = ready;
    self->ready_append = PyObject_GetAttrString(ready, "append");
    if (self->ready_append == NULL)
        return -1;
    self->ready_popleft = PyObject_GetAttrString(ready, "popleft");
    return self->ready_popleft == NULL ? -1 : 0;
}

/* create_future(): asyncio.Future(loop=loop), as loop.create_future() (one Python frame
 * per Future: a stream's read or drain makes one per wait). */
static PyObject *s_loop_kwname;

static PyObject *Accel_create_future(Accel *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *loop = get_loop(self);
    if (loop == NULL)
        return NULL;
    PyObject *fut = PyObject_Vectorcall(self->future_type, &loop, 0, s_loop_kwname);
    Py_DECREF(loop);
    return fut;
}

/* ------------------------------------------------------------------ handles */

/* A new handle of ``type`` (the timer slots left to the caller), or NULL. */
static PyObject *new_handle(Accel *self, PyTypeObject *type, PyObject *loop, PyObject *callback,
                            PyObject *cbargs, PyObject *context) {
    PyObject *h = type->tp_alloc(type, 0);
    if (h == NULL)
        return NULL;
    if (context == NULL || context == Py_None) {
        if ((context = PyContext_CopyCurrent()) == NULL) {
            Py_DECREF(h);
            return NULL;
        }
    } else {
        Py_INCREF(context);
    }
    SLOT(h, self->h_context) = context;
    SLOT(h, self->h_loop) = Py_NewRef(loop);
    SLOT(h, self->h_callback) = Py_NewRef(callback);
    SLOT(h, self->h_args) = Py_NewRef(cbargs);
    SLOT(h, self->h_cancelled) = Py_NewRef(Py_False);
    SLOT(h, self->h_repr) = Py_NewRef(Py_None);
    SLOT(h, self->h_source_traceback) = Py_NewRef(Py_None);
    return h;
}

/* Parse (callback, *args, context=None) after ``skip`` leading positional arguments.
 * 1: a call this does not take apart (too few positional arguments, or a keyword other
 * than context=, such as asyncio's call_later(delay=..., callback=...)), for call_python. */
static int parse_call(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      Py_ssize_t skip, PyObject **cbargs, PyObject **context) {
    *context = NULL;
    if (kwnames != NULL) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, "context") != 0)
                return 1;
            *context = args[nargs + i];
        }
    }
    if (nargs <= skip)
        return 1;
    *cbargs = PyTuple_New(nargs - skip - 1);
    if (*cbargs == NULL)
        return -1;
    for (Py_ssize_t i = skip + 1; i < nargs; i++)
        PyTuple_SET_ITEM(*cbargs, i - skip - 1, Py_NewRef(args[i]));
    return 0;
}

/* The Python method itself, CoreLoop.<method>(loop, *args, **kwargs): it binds the
 * arguments as asyncio's signature does, and raises its TypeError when they do not fit. */
static PyObject *call_python(Accel *self, const char *method, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *loop = get_loop(self), *pos = NULL, *kw = NULL, *r = NULL;
    if (loop == NULL)
        return NULL;
    if ((pos = PyTuple_New(nargs)) == NULL || (kw = PyDict_New()) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(pos, i, Py_NewRef(args[i]));
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++)
        if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
            goto done;
    r = PyObject_CallFunction(self->call_python, "OsOO", loop, method, pos, kw);
done:
    Py_DECREF(loop);
    Py_XDECREF(pos);
    Py_XDECREF(kw);
    return r;
}

/* create_task(coro): asyncio.Task(coro, loop=loop) while the loop has no task factory
 * (and is not closed or in debug mode: then this is not bound); with a name, a context or
 * a factory, the Python create_task(). */
static PyObject *s_task_factory;

static PyObject *Accel_create_task(Accel *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
    if (nargs == 1 && kwnames == NULL) {
        PyObject *loop = get_loop(self);
        if (loop == NULL)
            return NULL;
        if (SLOT(loop, self->l_careful) == Py_False) {
            PyObject *factory = PyObject_GetAttr(loop, s_task_factory);
            if (factory == NULL) {
                Py_DECREF(loop);
                return NULL;
            }
            Py_DECREF(factory);
            if (factory == Py_None) {
                PyObject *call[2] = {args[0], loop};
                PyObject *task = PyObject_Vectorcall(self->task_type, call, 1, s_loop_kwname);
                Py_DECREF(loop);
                return task;
            }
        }
        Py_DECREF(loop);
    }
    return call_python(self, "create_task", args, nargs, kwnames);
}

/* The Python path: fallback(loop, callback, args, context) or fallback(loop, first,
 * callback, args, context).  (Every fallback takes the loop first: the accelerator holds
 * plain functions, so no reference cycle runs through the loop.) */
static PyObject *slow_path(PyObject *fallback, PyObject *loop, PyObject *first,
                           PyObject *callback, PyObject *cbargs, PyObject *context) {
    PyObject *ctx = context ? context : Py_None;
    if (first != NULL)
        return PyObject_CallFunctionObjArgs(fallback, loop, first, callback, cbargs, ctx, NULL);
    return PyObject_CallFunctionObjArgs(fallback, loop, callback, cbargs, ctx, NULL);
}

static PyObject *append_ready(Accel *self, PyObject *h) {
    PyObject *r = PyObject_CallOneArg(self->ready_append, h);
    if (r == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(r);
    return h;
}

/* handle(callback, args): an unqueued Handle for callback(*args) in a copy of the current
 * context, as asyncio.Handle(callback, args, loop, None) outside debug mode. */
static PyObject *Accel_handle(Accel *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "handle(callback, args: tuple)");
        return NULL;
    }
    PyObject *loop = get_loop(self);
    if (loop == NULL)
        return NULL;
    PyObject *h = new_handle(self, self->handle_type, loop, args[0], args[1], NULL);
    Py_DECREF(loop);
    return h;
}

static PyObject *Accel_call_soon(Accel *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    PyObject *cbargs, *context;
    int parsed = parse_call(args, nargs, kwnames, 0, &cbargs, &context);
    if (parsed != 0)
        return parsed < 0 ? NULL : call_python(self, "call_soon", args, nargs, kwnames);
    PyObject *loop = get_loop(self), *h = NULL;
    if (loop == NULL)
        goto done;
    if (SLOT(loop, self->l_careful) != Py_False || !PyCallable_Check(args[0])) {
        h = slow_path(self->call_soon_py, loop, NULL, args[0], cbargs, context);
        goto done;
    }
    if ((h = new_handle(self, self->handle_type, loop, args[0], cbargs, context)) != NULL)
        h = append_ready(self, h);
done:
    Py_XDECREF(loop);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *Accel_call_soon_threadsafe(Accel *self, PyObject *const *args,
                                            Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *cbargs, *context;
    int parsed = parse_call(args, nargs, kwnames, 0, &cbargs, &context);
    if (parsed != 0)
        return parsed < 0 ? NULL : call_python(self, "call_soon_threadsafe", args, nargs, kwnames);
    PyObject *loop = get_loop(self), *h = NULL;
    if (loop == NULL)
        goto done;
    if (SLOT(loop, self->l_closed) != Py_False || SLOT(loop, self->l_careful) != Py_False ||
        !PyCallable_Check(args[0])) {
        h = slow_path(self->call_soon_threadsafe_py, loop, NULL, args[0], cbargs, context);
        goto done;
    }
    if ((h = new_handle(self, self->handle_type, loop, args[0], cbargs, context)) == NULL)
        goto done;
    if ((h = append_ready(self, h)) == NULL)
        goto done;
    /* As the Python path: a wake-up only while the loop may block in libuv, and a
     * poster far ahead of the loop sleeps briefly (_POSTER_YIELD_BACKLOG). */
    if (SLOT(loop, self->l_polling) == Py_True)
        self->wakeup(self->uv);
    if (PyObject_Size(self->ready) > POSTER_YIELD_BACKLOG) {
        PyObject *r = PyObject_CallOneArg(self->poster_yield, loop);
        if (r == NULL)
            Py_CLEAR(h);
        Py_XDECREF(r);
    }
done:
    Py_XDECREF(loop);
    Py_DECREF(cbargs);
    return h;
}

/* The TimerHandle for ``when`` (a float object), queued as loop._call_at queues it. */
static PyObject *schedule_timer(Accel *self, PyObject *loop, PyObject *when, PyObject *callback,
                                PyObject *cbargs, PyObject *context) {
    PyObject *h = new_handle(self, self->timer_type, loop, callback, cbargs, context);
    if (h == NULL)
        return NULL;
    SLOT(h, self->t_when) = Py_NewRef(when);
    SLOT(h, self->t_scheduled) = Py_NewRef(Py_False);
    PyObject *new_timers = SLOT(loop, self->l_new_timers);
    if (new_timers == NULL || !PyList_CheckExact(new_timers) || PyList_Append(new_timers, h) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "loop._new_timers is not a list");
        Py_DECREF(h);
        return NULL;
    }
    if (PyList_GET_SIZE(new_timers) > 1024) {
        PyObject *r = PyObject_CallOneArg(self->flush_new_timers, loop);
        if (r == NULL) {
            Py_DECREF(h);
            return NULL;
        }
        Py_DECREF(r);
    }
    return h;
}

static PyObject *Accel_call_later(Accel *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    PyObject *cbargs, *context;
    int parsed = parse_call(args, nargs, kwnames, 1, &cbargs, &context);
    if (parsed != 0)
        return parsed < 0 ? NULL : call_python(self, "call_later", args, nargs, kwnames);
    PyObject *loop = get_loop(self), *h = NULL, *delay = args[0], *callback = args[1];
    if (loop == NULL)
        goto done;
    if (SLOT(loop, self->l_careful) != Py_False || !PyCallable_Check(callback) ||
        !(PyFloat_CheckExact(delay) || PyLong_CheckExact(delay))) {
        h = slow_path(self->call_later_py, loop, delay, callback, cbargs, context);
        goto done;
    }
    double d = PyFloat_AsDouble(delay); /* an exact int too big for a double raises */
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        h = slow_path(self->call_later_py, loop, delay, callback, cbargs, context);
        goto done;
    }
    PyObject *when = PyFloat_FromDouble(monotonic() + d);
    if (when == NULL)
        goto done;
    h = schedule_timer(self, loop, when, callback, cbargs, context);
    Py_DECREF(when);
done:
    Py_XDECREF(loop);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *Accel_call_at(Accel *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    PyObject *cbargs, *context;
    int parsed = parse_call(args, nargs, kwnames, 1, &cbargs, &context);
    if (parsed != 0)
        return parsed < 0 ? NULL : call_python(self, "call_at", args, nargs, kwnames);
    PyObject *loop = get_loop(self), *h = NULL, *when = args[0], *callback = args[1];
    if (loop == NULL)
        goto done;
    if (SLOT(loop, self->l_careful) != Py_False || !PyCallable_Check(callback) ||
        !PyFloat_CheckExact(when)) {
        h = slow_path(self->call_at_py, loop, when, callback, cbargs, context);
        goto done;
    }
    h = schedule_timer(self, loop, when, callback, cbargs, context);
done:
    Py_XDECREF(loop);
    Py_DECREF(cbargs);
    return h;
}

/* ------------------------------------------------------------------ running */

/* The exception set now, normalized, with its traceback attached (a new reference). */
static PyObject *fetch_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Set ``exc`` (a reference this steals) as the current exception again. */
static void restore_exception(PyObject *exc) {
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}

static int add_callbacks_run(Accel *self, PyObject *loop, Py_ssize_t n) {
    PyObject **p = &SLOT(loop, self->l_callbacks_run);
    PyObject *old = *p;
    if (old == NULL || !PyLong_CheckExact(old))
        return 0;
    PyObject *delta = PyLong_FromSsize_t(n);
    if (delta == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(old, delta);
    Py_DECREF(delta);
    if (sum == NULL)
        return -1;
    *p = sum;
    Py_DECREF(old);
    return 0;
}

/* run_handles(next_handle, ntodo): run ``ntodo`` handles taken with next_handle(), each
 * in its context, as Handle._run() would; an exception goes to callback_failed(handle,
 * exc), which logs it, or answers True for an interruption (Ctrl-C, SystemExit, a signal
 * handler's exception: loop/_signals.py's interruption()), which propagates. */
static int run_handles(Accel *self, PyObject *loop, PyObject *next_handle, Py_ssize_t ntodo);

static PyObject *Accel_run_handles(Accel *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "run_handles(next_handle, ntodo)");
        return NULL;
    }
    Py_ssize_t ntodo = PyLong_AsSsize_t(args[1]);
    if (ntodo < 0)
        return PyErr_Occurred() ? NULL : (Py_INCREF(Py_None), Py_None);
    PyObject *loop = get_loop(self);
    if (loop == NULL)
        return NULL;
    int r = run_handles(self, loop, args[0], ntodo);
    Py_DECREF(loop);
    return r < 0 ? NULL : Py_NewRef(Py_None);
}

/* The batch loop of run_handles(): 0, or -1 with an exception set. */
static int run_handles(Accel *self, PyObject *loop, PyObject *next_handle, Py_ssize_t ntodo) {
    Py_ssize_t ran = 0;
    int result = -1;
    while (ntodo-- > 0) {
        PyObject *h = PyObject_CallNoArgs(next_handle);
        if (h == NULL)
            goto out;
        if (SLOT(h, self->h_cancelled) != Py_False) {
            Py_DECREF(h);
            continue;
        }
        ran++;
        PyObject *ctx = SLOT(h, self->h_context), *cb = SLOT(h, self->h_callback);
        PyObject *cbargs = SLOT(h, self->h_args);
        if (ctx == NULL || cb == NULL || cbargs == NULL || !PyTuple_Check(cbargs)) {
            Py_DECREF(h);
            PyErr_SetString(PyExc_RuntimeError, "a handle without its slots");
            goto out;
        }
        Py_INCREF(ctx);
        Py_INCREF(cb);
        Py_INCREF(cbargs);
        PyObject *res = NULL;
        if (PyContext_CheckExact(ctx)) {
            if (PyContext_Enter(ctx) == 0) {
                res = PyObject_Call(cb, cbargs, NULL);
                if (PyContext_Exit(ctx) < 0)
                    Py_CLEAR(res);
            }
        } else {
            /* Any other context= object: ctx.run(cb, *args), as Handle._run() calls it
             * (an object with a run() method works; one without is its AttributeError,
             * not PyContext_Enter's TypeError). */
            PyObject *run = PyObject_GetAttrString(ctx, "run");
            if (run != NULL) {
                PyObject *head = PyTuple_Pack(1, cb);
                PyObject *all = head ? PySequence_Concat(head, cbargs) : NULL;
                Py_XDECREF(head);
                if (all != NULL) {
                    res = PyObject_Call(run, all, NULL);
                    Py_DECREF(all);
                }
                Py_DECREF(run);
            }
        }
        Py_DECREF(ctx);
        Py_DECREF(cb);
        Py_DECREF(cbargs);
        if (res != NULL) {
            Py_DECREF(res);
            Py_DECREF(h);
            continue;
        }
        PyObject *exc = fetch_exception();
        PyObject *r = PyObject_CallFunctionObjArgs(self->callback_failed, loop, h, exc, NULL);
        Py_DECREF(h);
        if (r == NULL) {
            Py_XDECREF(exc);
            goto out;
        }
        int leaves = r == Py_True;
        Py_DECREF(r);
        if (leaves && exc != NULL) {
            restore_exception(exc);
            goto out;
        }
        Py_XDECREF(exc);
    }
    result = 0;
out:
    if (add_callbacks_run(self, loop, ran) < 0)
        result = -1;
    return result;
}

/* A Protocol's stream in read-into mode has data: read it into the loop's receive buffer
 * and hand each read to ``recv`` (the owner's _uv_recv, a reference this steals) as bytes,
 * as transports/stream.py's _recv_stream does.  Reading goes on while reads fill the
 * buffer (as libuv's own reads do, 32 at most) and the owner still has a _uv_recv (the
 * protocol may pause or close).  EOF and errors go to the owner's _uv_recv_ended(n).
 * NULL with *read_failed set when recv raised, and *unread the bytes it raised on (an
 * interruption that landed before recv began leaves them unread: see dispatch). */
static PyObject *recv_stream(uvc_loop_t *L, PyObject *owner, PyObject *recv, int slot,
                             int *read_failed, PyObject **unread) {
    char *buf = c_recv_buffer(L);
    for (int budget = 32;; budget--) {
        int64_t n = buf == NULL ? UV_ENOMEM : c_read_into(L, slot, buf, UVC_RECV_MAX);
        if (n <= 0) {
            Py_DECREF(recv);
            if (n == UV_EAGAIN)
                Py_RETURN_NONE;
            PyObject *code = PyLong_FromLongLong(n);
            PyObject *r = code ? PyObject_CallMethodOneArg(owner, s_uv_recv_ended, code) : NULL;
            Py_XDECREF(code);
            return r;
        }
        PyObject *data = PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
        PyObject *r = data ? PyObject_CallOneArg(recv, data) : NULL;
        Py_DECREF(recv);
        if (r == NULL) {
            *read_failed = 1;
            *unread = data;
            return NULL;
        }
        Py_DECREF(data);
        if (n < UVC_RECV_MAX || budget == 1)
            return r;
        Py_DECREF(r);
        recv = PyObject_GetAttr(owner, s_uv_recv);
        if (recv == NULL)
            return NULL;
        if (recv == Py_None)
            return recv;
    }
}

/* dispatch(n): the ``n`` event records of the last uvc_run_once to the owners of their
 * slots (loop/_core.py's dispatch loop, which PyPy runs, says the same in Python). */
static PyObject *Accel_dispatch(Accel *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0)
        return PyErr_Occurred() ? NULL : (Py_INCREF(Py_None), Py_None);
    PyObject *loop = get_loop(self);
    if (loop == NULL)
        return NULL;
    PyObject *slots = SLOT(loop, self->l_slots);
    if (slots == NULL || !PyList_CheckExact(slots)) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "loop._slots is not a list");
        return NULL;
    }
    Py_INCREF(slots);
    const int64_t *ev = self->uv->events;
    const char *arena = self->uv->arena;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *e = ev + i * UVC_EVENT_WORDS;
        int64_t kind = e[0], slot = e[1];
        PyObject *owner = NULL, *r = NULL, *unread = NULL;
        if (slot >= 0 && slot < PyList_GET_SIZE(slots))
            owner = PyList_GET_ITEM(slots, slot);
        if (owner == Py_None)
            owner = NULL;
        Py_XINCREF(owner);
        if (kind == UVC_EV_READ) {
            if (owner == NULL)
                continue;
            PyObject *read = PyObject_GetAttr(owner, s_uv_read);
            if (read == NULL) {
                /* fall through to the error handling below */
            } else if (read != Py_None) {
                PyObject *data = PyBytes_FromStringAndSize(arena + e[2], (Py_ssize_t)e[3]);
                if (data != NULL) {
                    r = PyObject_CallOneArg(read, data);
                    Py_DECREF(data);
                }
                Py_DECREF(read);
            } else {
                Py_DECREF(read);
                PyObject *off = PyLong_FromLongLong(e[2]), *len = PyLong_FromLongLong(e[3]);
                if (off != NULL && len != NULL)
                    r = PyObject_CallMethodObjArgs(owner, s_uv_read_at, off, len, NULL);
                Py_XDECREF(off);
                Py_XDECREF(len);
            }
        } else if (kind == UVC_EV_READABLE) {
            if (owner == NULL)
                continue;
            PyObject *recv = PyObject_GetAttr(owner, s_uv_recv);
            if (recv == NULL) {
                /* fall through to the error handling below */
            } else if (recv != Py_None) {
                int read_failed = 0;
                r = recv_stream(self->uv, owner, recv, (int)slot, &read_failed, &unread);
                if (read_failed)
                    kind = UVC_EV_READ; /* data_received raised: the owner's error */
            } else {
                Py_DECREF(recv);
                r = PyObject_CallMethodNoArgs(owner, s_uv_readable);
            }
        } else if (kind == UVC_EV_CLOSED) {
            if (owner == NULL)
                continue;
            Py_INCREF(Py_None);
            PyList_SetItem(slots, slot, Py_None); /* steals; drops the list's reference */
            r = PyObject_CallMethodNoArgs(owner, s_uv_closed);
        } else if (kind == UVC_EV_SIGNAL) {
            Py_CLEAR(owner);
            PyObject *sig = PyLong_FromLongLong(e[2]);
            if (sig != NULL) {
                r = PyObject_CallFunctionObjArgs(self->handle_signal, loop, sig, NULL);
                Py_DECREF(sig);
            }
        } else {
            if (owner == NULL)
                continue;
            PyObject *k = PyLong_FromLongLong(kind), *a = PyLong_FromLongLong(e[2]);
            PyObject *b = PyLong_FromLongLong(e[3]), *c = PyLong_FromLongLong(e[4]);
            if (k && a && b && c)
                r = PyObject_CallMethodObjArgs(owner, s_uv_event, k, a, b, c, NULL);
            Py_XDECREF(k);
            Py_XDECREF(a);
            Py_XDECREF(b);
            Py_XDECREF(c);
        }
        if (r != NULL) {
            Py_DECREF(r);
            Py_XDECREF(owner);
            continue;
        }
        /* event_failed tells the owner, or answers True for an interruption, which
         * leaves with the events not handed out kept for the next run (their reads copied
         * out of the arena the next run reuses; this one's too if its owner had not
         * begun). */
        PyObject *exc = fetch_exception();
        PyObject *k = PyLong_FromLongLong(kind), *at = PyLong_FromSsize_t(i);
        PyObject *count = PyLong_FromSsize_t(n);
        r = k && at && count ? PyObject_CallFunctionObjArgs(
                                   self->event_failed, loop, owner ? owner : Py_None, k, exc,
                                   at, count, unread ? unread : Py_None, NULL)
                             : NULL;
        Py_XDECREF(k);
        Py_XDECREF(at);
        Py_XDECREF(count);
        Py_XDECREF(unread);
        Py_XDECREF(owner);
        if (r == NULL) {
            Py_XDECREF(exc);
            goto out;
        }
        int leaves = r == Py_True;
        Py_DECREF(r);
        if (leaves && exc != NULL) {
            restore_exception(exc);
            goto out;
        }
        Py_XDECREF(exc);
    }
    result = Py_NewRef(Py_None);
out:
    Py_DECREF(slots);
    Py_DECREF(loop);
    return result;
}

/* ------------------------------------------------------------------ stream writes */

/* transports/stream.py writes with lib.uvc_write(loop._uv, slot, data, n): a cffi call
 * that releases and retakes the GIL and converts each argument, ~650 instructions, for a
 * uv_try_write that never blocks.  stream_write takes the same arguments and calls
 * uvc_write directly.  It reads the uvc_loop_t pointer out of the cffi cdata object, whose
 * layout (PyObject_HEAD, the ctype, the pointer) setup() checks against a pointer it knows;
 * anything but bytes goes through the cffi function, as before. */
typedef struct {
    PyObject_HEAD
    void *c_type;
    char *c_data;
} cffi_cdata;

#if PY_VERSION_HEX < 0x030D0000
static int PyLong_AsInt(PyObject *v) {
    int overflow;
    long r = PyLong_AsLongAndOverflow(v, &overflow);
    if (overflow || r > INT_MAX || r < INT_MIN) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return -1;
    }
    return (int)r;
}
#endif

static PyTypeObject *cdata_types[2];
static int64_t (*c_uvc_write)(uvc_loop_t *, int, const char *, size_t);
static PyObject *py_uvc_write;

static PyObject *accel_setup_writes(PyObject *mod, PyObject *args) {
    PyObject *gc_cdata, *plain_cdata, *py_write;
    unsigned long long address, write_address;
    if (!PyArg_ParseTuple(args, "OOKOK", &gc_cdata, &plain_cdata, &address, &py_write,
                          &write_address))
        return NULL;
    PyObject *samples[2] = {gc_cdata, plain_cdata};
    for (int i = 0; i < 2; i++) {
        if ((uintptr_t)((cffi_cdata *)samples[i])->c_data != (uintptr_t)address) {
            PyErr_SetString(PyExc_TypeError, "cffi's cdata layout is not the one known");
            return NULL;
        }
    }
    for (int i = 0; i < 2; i++) {
        Py_XSETREF(cdata_types[i], (PyTypeObject *)Py_NewRef(Py_TYPE(samples[i])));
    }
    Py_XSETREF(py_uvc_write, Py_NewRef(py_write));
    c_uvc_write = (int64_t (*)(uvc_loop_t *, int, const char *, size_t))(uintptr_t)write_address;
    Py_RETURN_NONE;
}

static PyObject *accel_stream_write(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs == 4 && c_uvc_write != NULL &&
        (Py_TYPE(args[0]) == cdata_types[0] || Py_TYPE(args[0]) == cdata_types[1])) {
        int overflow;
        long slot = PyLong_AsLongAndOverflow(args[1], &overflow);
        Py_ssize_t n = PyLong_AsSsize_t(args[3]);
        if (PyErr_Occurred())
            return NULL;
        uvc_loop_t *L = (uvc_loop_t *)((cffi_cdata *)args[0])->c_data;
        if (!overflow && slot >= 0 && slot <= INT32_MAX && n >= 0) {
            if (PyBytes_CheckExact(args[2])) {
                if (n <= PyBytes_GET_SIZE(args[2]))
                    return PyLong_FromLongLong(
                        c_uvc_write(L, (int)slot, PyBytes_AS_STRING(args[2]), (size_t)n));
            } else if (PyObject_CheckBuffer(args[2])) {
                /* A contiguous bytearray or memoryview (transports/stream.py passes no
                 * other kind): uvc_write copies what it cannot send at once, so the buffer
                 * is not needed after this call. */
                Py_buffer view;
                if (PyObject_GetBuffer(args[2], &view, PyBUF_SIMPLE) == 0) {
                    PyObject *r = NULL;
                    if (n <= view.len)
                        r = PyLong_FromLongLong(c_uvc_write(L, (int)slot, view.buf, (size_t)n));
                    PyBuffer_Release(&view);
                    if (r != NULL)
                        return r;
                }
                PyErr_Clear(); /* the cffi function says what is wrong */
            }
        }
    }
    if (py_uvc_write == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "uvcffi._accel.setup_writes() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(py_uvc_write, args, (size_t)nargs, NULL);
}

/* Methods in C for the hottest one-line methods of the loop and its stream transports.
 * Each stands in a class for a Python function and calls that function for anything
 * unusual, so the checks and error messages stay written once, in Python.  As method
 * descriptors (Py_TPFLAGS_METHOD_DESCRIPTOR) they are called with the instance first and
 * no bound method object is made; introspection (help(), inspect.signature(), __name__)
 * sees the Python function's.
 *
 * SlotMethod(func, cls, name): a method without arguments that returns the slot ``name``
 * (loop.get_debug(), which each C Future calls when it is made; transport.is_closing(),
 * which StreamWriter.drain() calls on every write).
 *
 * StreamWrite(func, cls): a stream transport's write().  transports/stream.py's write() is
 * one Python frame per write: about 1,300 of the ~5,400 instructions of a 1 KiB echo round
 * trip, where uvloop's whole round trip is ~4,200.  For bytes written to a transport
 * whose writes are not blocked (no write_eof, sendfile, lost connection or closed loop:
 * the _write_blocked slot, which the Python code keeps) it does what write() does there:
 * uvc_write, then _write_partial(n, sent) in Python when the fd did not take it all. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;              /* the Python method this stands for */
    PyTypeObject *owner;         /* the class whose slot offsets these are */
    Py_ssize_t off[3];
} FastMethod;

static PyObject *s_write_partial;

static PyObject *SlotMethod_vectorcall(FastMethod *self, PyObject *const *args,
                                       size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL &&
        PyObject_TypeCheck(args[0], self->owner)) {
        PyObject *v = SLOT(args[0], self->off[0]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_Vectorcall(self->func, args, nargsf, kwnames);
}

enum { W_BLOCKED, W_UV, W_SLOT };

static PyObject *StreamWrite_vectorcall(FastMethod *self, PyObject *const *args,
                                        size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) == 2 && kwnames == NULL && c_uvc_write != NULL &&
        PyObject_TypeCheck(args[0], self->owner) && PyBytes_CheckExact(args[1])) {
        PyObject *t = args[0];
        PyObject *uv = SLOT(t, self->off[W_UV]), *slot = SLOT(t, self->off[W_SLOT]);
        if (SLOT(t, self->off[W_BLOCKED]) == Py_False && uv != NULL &&
            (Py_TYPE(uv) == cdata_types[0] || Py_TYPE(uv) == cdata_types[1]) &&
            slot != NULL && PyLong_CheckExact(slot)) {
            int overflow;
            long s = PyLong_AsLongAndOverflow(slot, &overflow);
            if (!overflow && s >= 0 && s <= INT32_MAX) {
                Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
                if (n == 0)
                    Py_RETURN_NONE;
                int64_t sent = c_uvc_write((uvc_loop_t *)((cffi_cdata *)uv)->c_data, (int)s,
                                           PyBytes_AS_STRING(args[1]), (size_t)n);
                if (sent == n)
                    Py_RETURN_NONE;
                PyObject *pn = PyLong_FromSsize_t(n), *ps = PyLong_FromLongLong(sent);
                PyObject *r = NULL;
                if (pn != NULL && ps != NULL)
                    r = PyObject_CallMethodObjArgs(t, s_write_partial, pn, ps, NULL);
                Py_XDECREF(pn);
                Py_XDECREF(ps);
                if (r == NULL)
                    return NULL;
                Py_DECREF(r);
                Py_RETURN_NONE;
            }
            PyErr_Clear();
        }
    }
    return PyObject_Vectorcall(self->func, args, nargsf, kwnames);
}

/* FastMethod_new(type, args, names, vectorcall): (func, cls) and the slots to find. */
static PyObject *FastMethod_new(PyTypeObject *type, PyObject *func, PyObject *cls,
                                PyObject *const *names, int nnames, vectorcallfunc call) {
    if (!PyCallable_Check(func) || !PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "%s(func, cls, ...): a function and a class",
                     type->tp_name);
        return NULL;
    }
    Py_ssize_t off[3];
    for (int i = 0; i < nnames; i++) {
        const char *name = PyUnicode_AsUTF8(names[i]);
        if (name == NULL || (off[i] = member_offset(cls, name)) < 0)
            return NULL;
    }
    FastMethod *self = (FastMethod *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = call;
    self->func = Py_NewRef(func);
    self->owner = (PyTypeObject *)Py_NewRef(cls);
    for (int i = 0; i < nnames; i++)
        self->off[i] = off[i];
    return (PyObject *)self;
}

static PyObject *SlotMethod_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *func, *cls, *name;
    if (!PyArg_ParseTuple(args, "OOU", &func, &cls, &name))
        return NULL;
    return FastMethod_new(type, func, cls, &name, 1, (vectorcallfunc)SlotMethod_vectorcall);
}

static PyObject *StreamWrite_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *func, *cls, *names[3] = {NULL, NULL, NULL};
    if (!PyArg_ParseTuple(args, "OO", &func, &cls))
        return NULL;
    const char *slot_names[3] = {"_write_blocked", "_uv", "_slot"};
    PyObject *r = NULL;
    for (int i = 0; i < 3; i++)
        if ((names[i] = PyUnicode_FromString(slot_names[i])) == NULL)
            goto out;
    r = FastMethod_new(type, func, cls, names, 3, (vectorcallfunc)StreamWrite_vectorcall);
out:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(names[i]);
    return r;
}

static PyObject *FastMethod_call(PyObject *self, PyObject *args, PyObject *kw) {
    return PyVectorcall_Call(self, args, kw);
}

/* instance.method gives a bound method, as a function does; the class gives this object. */
static PyObject *FastMethod_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static int FastMethod_traverse(FastMethod *self, visitproc visit, void *arg) {
    Py_VISIT(self->func);
    Py_VISIT(self->owner);
    return 0;
}

static int FastMethod_clear(FastMethod *self) {
    Py_CLEAR(self->func);
    Py_CLEAR(self->owner);
    return 0;
}

static void FastMethod_dealloc(FastMethod *self) {
    PyObject_GC_UnTrack(self);
    FastMethod_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *FastMethod_getattro(FastMethod *self, PyObject *name) {
    PyObject *r = PyObject_GenericGetAttr((PyObject *)self, name);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError) || self->func == NULL)
        return r;
    PyErr_Clear();
    return PyObject_GetAttr(self->func, name);
}

static PyObject *FastMethod_repr(FastMethod *self) {
    return PyUnicode_FromFormat("<accelerated %R>", self->func);
}

static PyObject *FastMethod_doc(FastMethod *self, void *closure) {
    return PyObject_GetAttrString(self->func, "__doc__");
}

static PyMemberDef FastMethod_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(FastMethod, func), READONLY,
     "the Python method this stands for"},
    {NULL}
};

static PyGetSetDef FastMethod_getset[] = {
    {"__doc__", (getter)FastMethod_doc, NULL, NULL, NULL},
    {NULL}
};

#define FAST_METHOD_TYPE(cname, pyname, doc, new)                                       \
    static PyTypeObject cname = {                                                       \
        PyVarObject_HEAD_INIT(NULL, 0)                                                  \
        .tp_name = "uvcffi._accel." pyname,                                             \
        .tp_doc = doc,                                                                  \
        .tp_basicsize = sizeof(FastMethod),                                             \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | \
                    Py_TPFLAGS_METHOD_DESCRIPTOR,                                       \
        .tp_vectorcall_offset = offsetof(FastMethod, vectorcall),                       \
        .tp_call = FastMethod_call,                                                     \
        .tp_descr_get = FastMethod_get,                                                 \
        .tp_getattro = (getattrofunc)FastMethod_getattro,                               \
        .tp_repr = (reprfunc)FastMethod_repr,                                           \
        .tp_members = FastMethod_members,                                               \
        .tp_getset = FastMethod_getset,                                                 \
        .tp_new = new,                                                                  \
        .tp_dealloc = (destructor)FastMethod_dealloc,                                   \
        .tp_traverse = (traverseproc)FastMethod_traverse,                               \
        .tp_clear = (inquiry)FastMethod_clear,                                          \
    }

FAST_METHOD_TYPE(SlotMethodType, "SlotMethod",
                 "SlotMethod(func, cls, name): a method returning a slot, in C.",
                 SlotMethod_new);
FAST_METHOD_TYPE(StreamWriteType, "StreamWrite",
                 "StreamWrite(func, cls): a stream transport's write(), in C for bytes.",
                 StreamWrite_new);

/* ------------------------------------------------------------------ sock_recv */

static int64_t (*c_sock_recv)(uvc_loop_t *, int, size_t);

static PyObject *accel_setup_sock(PyObject *mod, PyObject *args) {
    unsigned long long recv_address, buffer_address;
    if (!PyArg_ParseTuple(args, "KK", &recv_address, &buffer_address))
        return NULL;
    c_sock_recv = (int64_t (*)(uvc_loop_t *, int, size_t))(uintptr_t)recv_address;
    c_recv_buffer = (char *(*)(uvc_loop_t *))(uintptr_t)buffer_address;
    Py_RETURN_NONE;
}

/* sock_recv(uv, fd, n): uvc_sock_recv as bytes of what arrived, None when nothing has
 * (no exception for "would block"), OSError for an error. */
static PyObject *accel_sock_recv(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || c_sock_recv == NULL ||
        !(Py_TYPE(args[0]) == cdata_types[0] || Py_TYPE(args[0]) == cdata_types[1])) {
        PyErr_SetString(PyExc_TypeError, "sock_recv(uv, fd, n) of a loop's cdata");
        return NULL;
    }
    int fd = PyLong_AsInt(args[1]);
    size_t n = PyLong_AsSize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    uvc_loop_t *L = (uvc_loop_t *)((cffi_cdata *)args[0])->c_data;
    int64_t r = c_sock_recv(L, fd, n);
    if (r >= 0)
        return PyBytes_FromStringAndSize(c_recv_buffer(L), (Py_ssize_t)r);
    if (r == UV_EAGAIN)
        Py_RETURN_NONE;
    errno = (int)-r; /* libuv's errors are negated errnos on Unix */
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* fdset_ctl(uv, fd, old, events): lib.uvc_fdset_ctl without the cffi call (every sock_*
 * wait makes two: its watch and its unwatch). */
static int64_t (*c_fdset_ctl)(uvc_loop_t *, int, int, int);

static PyObject *accel_setup_fdset(PyObject *mod, PyObject *arg) {
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    c_fdset_ctl = (int64_t (*)(uvc_loop_t *, int, int, int))(uintptr_t)address;
    Py_RETURN_NONE;
}

static PyObject *accel_fdset_ctl(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || c_fdset_ctl == NULL ||
        !(Py_TYPE(args[0]) == cdata_types[0] || Py_TYPE(args[0]) == cdata_types[1])) {
        PyErr_SetString(PyExc_TypeError, "fdset_ctl(uv, fd, old, events) of a loop's cdata");
        return NULL;
    }
    int fd = PyLong_AsInt(args[1]), old = PyLong_AsInt(args[2]), events = PyLong_AsInt(args[3]);
    if (PyErr_Occurred())
        return NULL;
    uvc_loop_t *L = (uvc_loop_t *)((cffi_cdata *)args[0])->c_data;
    return PyLong_FromLongLong(c_fdset_ctl(L, fd, old, events));
}

/* arena_copy(uv, off, total, buf): copy a read of ``total`` bytes from the arena (at
 * ``off``) into the writable buffer ``buf`` through uvc_arena_copy; False when ``buf`` is
 * not a writable byte buffer of at least ``total`` bytes (the caller copies piecewise). */
static void (*c_arena_copy)(uvc_loop_t *, int64_t, char *, size_t);

static PyObject *accel_arena_copy(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || c_arena_copy == NULL ||
        !(Py_TYPE(args[0]) == cdata_types[0] || Py_TYPE(args[0]) == cdata_types[1])) {
        PyErr_SetString(PyExc_TypeError, "arena_copy(uv, off, total, buf) of a loop's cdata");
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[1]);
    Py_ssize_t total = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    uvc_loop_t *L = (uvc_loop_t *)((cffi_cdata *)args[0])->c_data;
    if (off < 0 || total < 0 || (size_t)off + (size_t)total > L->arena_size) {
        PyErr_SetString(PyExc_ValueError, "outside the arena");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[3], &view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_ND) < 0) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    int fits = view.len >= total && view.itemsize == 1 &&
               (view.format == NULL || strcmp(view.format, "B") == 0 ||
                strcmp(view.format, "b") == 0 || strcmp(view.format, "c") == 0);
    if (fits)
        c_arena_copy(L, off, view.buf, (size_t)total);
    PyBuffer_Release(&view);
    return PyBool_FromLong(fits);
}

static PyObject *accel_setup_copy(PyObject *mod, PyObject *arg) {
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    c_arena_copy = (void (*)(uvc_loop_t *, int64_t, char *, size_t))(uintptr_t)address;
    Py_RETURN_NONE;
}

/* read_into(uv, slot, buf): uvc_read_into straight into the writable contiguous buffer
 * ``buf`` (read-into mode, a BufferedProtocol's read): the bytes read or a negative uv
 * error.  An empty buffer is the protocol's error, as in asyncio. */

static PyObject *accel_read_into(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || c_read_into == NULL ||
        !(Py_TYPE(args[0]) == cdata_types[0] || Py_TYPE(args[0]) == cdata_types[1])) {
        PyErr_SetString(PyExc_TypeError, "read_into(uv, slot, buf) of a loop's cdata");
        return NULL;
    }
    int slot = PyLong_AsInt(args[1]);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[2], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    PyObject *r;
    if (view.len == 0) {
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        r = NULL;
    } else {
        uvc_loop_t *L = (uvc_loop_t *)((cffi_cdata *)args[0])->c_data;
        r = PyLong_FromLongLong(c_read_into(L, slot, view.buf, (size_t)view.len));
    }
    PyBuffer_Release(&view);
    return r;
}

static PyObject *accel_setup_read_into(PyObject *mod, PyObject *arg) {
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    c_read_into = (int64_t (*)(uvc_loop_t *, int, char *, size_t))(uintptr_t)address;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ the iteration */

static PyObject *s_dispatch_backlog, *s_keep_due, *s_keep_lost_run, *s_heappop, *s_one;

/* Replace the slot at ``off`` of ``obj`` with ``value`` (a new reference, stolen). */
static void set_slot(PyObject *obj, Py_ssize_t off, PyObject *value) {
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

/* A timer handle's slot at ``off`` (a borrowed reference, NULL if it has none). */
static PyObject *timer_slot(Accel *self, PyObject *handle, Py_ssize_t off) {
    return PyObject_TypeCheck(handle, self->timer_type) ? SLOT(handle, off) : NULL;
}

/* The handle of a timer heap entry (when, sequence, handle): borrowed, or NULL. */
static PyObject *entry_handle(PyObject *entry) {
    return PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 3 ? PyTuple_GET_ITEM(entry, 2)
                                                                      : NULL;
}

/* Pop the due timers of the heap into ``due``, as loop/_core.py's _run_once does after the
 * poll: 0, or -1 with an exception (``due`` holds those popped so far). */
static int pop_due(Accel *self, PyObject *loop, PyObject *timers, PyObject *due) {
    double now = monotonic();
    PyObject *now_obj = NULL;
    while (PyList_GET_SIZE(timers) > 0) {
        PyObject *entry = PyList_GET_ITEM(timers, 0), *handle = entry_handle(entry);
        if (handle == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "a timer heap entry is not (when, seq, handle)");
            goto fail;
        }
        PyObject *when = PyTuple_GET_ITEM(entry, 0);
        int later;
        if (PyFloat_CheckExact(when)) {
            later = PyFloat_AS_DOUBLE(when) > now;
        } else {
            if (now_obj == NULL && (now_obj = PyFloat_FromDouble(now)) == NULL)
                goto fail;
            if ((later = PyObject_RichCompareBool(when, now_obj, Py_GT)) < 0)
                goto fail;
        }
        if (later)
            break;
        Py_INCREF(handle);
        int appended = PyList_Append(due, handle);
        PyObject *popped = appended < 0 ? NULL : PyObject_CallOneArg(s_heappop, timers);
        Py_XDECREF(popped);
        if (popped == NULL) {
            Py_DECREF(handle);
            goto fail;
        }
        int ok;
        if (timer_slot(self, handle, self->t_scheduled) != NULL) {
            set_slot(handle, self->t_scheduled, Py_NewRef(Py_False));
            ok = 0;
        } else {
            ok = PyObject_SetAttrString(handle, "_scheduled", Py_False);
        }
        PyObject *cancelled = ok < 0 ? NULL : timer_slot(self, handle, self->h_cancelled);
        Py_DECREF(handle);
        if (ok < 0)
            goto fail;
        if (cancelled == Py_True) {
            PyObject *count = SLOT(loop, self->l_cancelled_count);
            PyObject *less = count == NULL ? NULL : PyNumber_Subtract(count, s_one);
            if (less == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_RuntimeError, "loop._timer_cancelled_count unset");
                goto fail;
            }
            set_slot(loop, self->l_cancelled_count, less);
        }
    }
    Py_XDECREF(now_obj);
    return 0;
fail:
    Py_XDECREF(now_obj);
    return -1;
}

/* Call loop.<name>(arg) for an exception on its way out, which it keeps. */
static void keep_for_next_run(PyObject *loop, PyObject *name, PyObject *arg) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallMethodOneArg(loop, name, arg);
    if (r == NULL)
        PyErr_Clear(); /* the original exception wins */
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

/* run_once(): loop/_core.py's _run_once, in C, for an ordinary iteration: no kept events
 * (a backlog), no heap to compact, no cancelled timer first in the heap.  Otherwise the
 * Python iteration runs, which does those; so does everything this only calls (flushing
 * new timers, keeping state for the next run when an exception leaves).  The order and the
 * exception handling are the Python code's, line for line. */
static PyObject *Accel_run_once(Accel *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *loop = get_loop(self);
    if (loop == NULL)
        return NULL;
    PyObject *result = NULL, *timers = NULL, *due = NULL, *runs = NULL;
    PyObject *backlog = SLOT(loop, self->l_backlog), *fresh = SLOT(loop, self->l_new_timers);
    timers = SLOT(loop, self->l_timers);
    if (backlog == NULL || !PyList_CheckExact(backlog) || PyList_GET_SIZE(backlog) ||
        fresh == NULL || !PyList_CheckExact(fresh) || timers == NULL ||
        !PyList_CheckExact(timers)) {
        timers = NULL;
        goto python;
    }
    Py_INCREF(timers);
    if (PyList_GET_SIZE(fresh)) {
        PyObject *r = PyObject_CallOneArg(self->flush_new_timers, loop);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
    }
    PyObject *count = SLOT(loop, self->l_cancelled_count);
    long long cancelled = count != NULL && PyLong_CheckExact(count) ? PyLong_AsLongLong(count)
                                                                    : -1;
    if (cancelled < 0) {
        PyErr_Clear();
        goto python;
    }
    if (cancelled > self->compact_min && cancelled * 2 > PyList_GET_SIZE(timers))
        goto python; /* compaction */
    if (PyList_GET_SIZE(timers)) {
        PyObject *handle = entry_handle(PyList_GET_ITEM(timers, 0));
        if (handle == NULL || timer_slot(self, handle, self->h_cancelled) != Py_False ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(PyList_GET_ITEM(timers, 0), 0)))
            goto python; /* a cancelled timer to drop first, or an unusual heap */
    }

    /* The flag goes up before the ready queue is looked at (see _run_once). */
    set_slot(loop, self->l_polling, Py_NewRef(Py_True));
    int64_t timeout;
    PyObject *stopping = SLOT(loop, self->l_stopping);
    Py_ssize_t nready = PyObject_Size(self->ready);
    if (nready < 0)
        goto out;
    if (nready || (stopping != NULL && stopping != Py_False)) {
        timeout = 0;
    } else if (PyList_GET_SIZE(timers)) {
        double when = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(PyList_GET_ITEM(timers, 0), 0));
        double delay = (when - monotonic()) * 1000.0;
        /* (the cap before ceil; NaN is not > 0: due at once) */
        timeout = delay > 0 ? (int64_t)ceil(delay < (double)self->max_timeout_ms
                                                ? delay : (double)self->max_timeout_ms)
                            : 0;
    } else {
        timeout = -1;
    }
    runs = SLOT(loop, self->l_runs);
    if (runs == NULL || !PyLong_CheckExact(runs)) {
        PyErr_SetString(PyExc_RuntimeError, "loop._runs is not an int");
        runs = NULL;
        goto out;
    }
    Py_INCREF(runs);
    if ((due = PyList_New(0)) == NULL)
        goto out;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = self->run_uv(self->uv, timeout);
    Py_END_ALLOW_THREADS
    /* Python's signal handlers run here, as they run when the cffi call returns: a Ctrl-C
     * between the poll and the dispatch keeps the run's events (_keep_lost_run). */
    if (PyErr_CheckSignals() < 0)
        goto lost_run;
    PyObject *next_runs = PyNumber_Add(runs, s_one);
    if (next_runs == NULL)
        goto lost_run;
    set_slot(loop, self->l_runs, next_runs);
    set_slot(loop, self->l_polling, Py_NewRef(Py_False));
    Py_ssize_t ntodo = PyObject_Size(self->ready);
    if (ntodo < 0 || (PyList_GET_SIZE(timers) && pop_due(self, loop, timers, due) < 0))
        goto lost_run;

    if (ntodo && run_handles(self, loop, self->ready_popleft, ntodo) < 0) {
        /* an interruption: the handle it landed on before it began goes back first
         * (_keep_unrun), and the run's events wait for the next run */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *kr = PyObject_CallMethod(loop, "_keep_unrun", "O", Py_None);
        if (kr == NULL)
            PyErr_Clear();
        Py_XDECREF(kr);
        if (n) {
            PyObject *first = PyLong_FromLong(0), *cnt = PyLong_FromLong(n);
            kr = first && cnt ? PyObject_CallFunctionObjArgs(self->keep_undispatched, loop,
                                                             first, cnt, NULL)
                              : NULL;
            if (kr == NULL)
                PyErr_Clear();
            Py_XDECREF(kr);
            Py_XDECREF(first);
            Py_XDECREF(cnt);
        }
        PyErr_Restore(type, value, tb);
        goto keep_due;
    }
    if (n) {
        PyObject *debug = SLOT(loop, self->l_debug);
        PyObject *r;
        if (debug != NULL && debug != Py_False) {
            /* debug mode came on in a callback: each event timed (_dispatch_backlog) */
            PyObject *first = PyLong_FromLong(0), *cnt = PyLong_FromLong(n);
            r = first && cnt ? PyObject_CallFunctionObjArgs(self->keep_undispatched, loop,
                                                            first, cnt, NULL)
                             : NULL;
            Py_XDECREF(first);
            Py_XDECREF(cnt);
            if (r != NULL) {
                Py_DECREF(r);
                r = PyObject_CallMethodNoArgs(loop, s_dispatch_backlog);
            }
        } else {
            PyObject *cnt = PyLong_FromLong(n);
            r = cnt ? Accel_dispatch(self, cnt) : NULL;
            Py_XDECREF(cnt);
        }
        if (r == NULL)
            goto keep_due;
        Py_DECREF(r);
    }

    Py_ssize_t ndue = PyList_GET_SIZE(due);
    if (ndue) {
        PyObject *rest = PyObject_GetIter(due);
        PyObject *next = rest ? PyObject_GetAttrString(rest, "__next__") : NULL;
        int r = -1;
        if (next != NULL && SLOT(loop, self->l_careful) == Py_False) {
            r = run_handles(self, loop, next, ndue);
        } else if (next != NULL) {
            /* debug mode came on in a callback: the timers run as the Python code would */
            PyObject *cnt = PyLong_FromSsize_t(ndue);
            PyObject *rr = cnt ? PyObject_CallMethod(loop, "_run_handles", "OO", next, cnt)
                               : NULL;
            Py_XDECREF(cnt);
            r = rr == NULL ? -1 : 0;
            Py_XDECREF(rr);
        }
        Py_XDECREF(next);
        if (r < 0 && rest != NULL) {
            /* The timers after the one that raised are due still: first when the loop
             * runs again, after the one the interruption landed on if it had not begun
             * (loop._keep_unrun(list(rest))). */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *left = PySequence_List(rest);
            if (left != NULL) {
                PyObject *e = PyObject_CallMethod(loop, "_keep_unrun", "O", left);
                Py_XDECREF(e);
            }
            Py_XDECREF(left);
            PyErr_Clear();
            PyErr_Restore(type, value, tb);
        }
        Py_XDECREF(rest);
        if (r < 0)
            goto out;
    }
    result = Py_NewRef(Py_None);
    goto out;

lost_run:
    set_slot(loop, self->l_polling, Py_NewRef(Py_False));
    keep_for_next_run(loop, s_keep_due, due);
    keep_for_next_run(loop, s_keep_lost_run, runs);
    goto out;
keep_due:
    keep_for_next_run(loop, s_keep_due, due);
    goto out;
python:
    result = PyObject_CallOneArg(self->run_once_py, loop);
out:
    Py_XDECREF(due);
    Py_XDECREF(runs);
    Py_XDECREF(timers);
    Py_DECREF(loop);
    return result;
}

static PyMethodDef module_methods[] = {
    {"setup_read_into", accel_setup_read_into, METH_O, "setup_read_into(uvc_read_into_address)"},
    {"read_into", (PyCFunction)(void (*)(void))accel_read_into, METH_FASTCALL,
     "read_into(uv, slot, buf): one read of a stream into buf (see uvc_read_into)."},
    {"setup_copy", accel_setup_copy, METH_O, "setup_copy(uvc_arena_copy_address)"},
    {"arena_copy", (PyCFunction)(void (*)(void))accel_arena_copy, METH_FASTCALL,
     "arena_copy(uv, off, total, buf): a read from the arena into buf; False if it cannot."},
    {"setup_fdset", accel_setup_fdset, METH_O, "setup_fdset(uvc_fdset_ctl_address)"},
    {"fdset_ctl", (PyCFunction)(void (*)(void))accel_fdset_ctl, METH_FASTCALL,
     "fdset_ctl(uv, fd, old, events): lib.uvc_fdset_ctl, called directly."},
    {"setup_sock", accel_setup_sock, METH_VARARGS,
     "setup_sock(uvc_sock_recv_address, uvc_recv_buffer_address)"},
    {"sock_recv", (PyCFunction)(void (*)(void))accel_sock_recv, METH_FASTCALL,
     "sock_recv(uv, fd, n): bytes received, None for nothing yet (see uvc_sock.h)."},
    {"setup_writes", accel_setup_writes, METH_VARARGS,
     "setup_writes(gc_cdata, plain_cdata, address, lib_uvc_write, uvc_write_address)"},
    {"stream_write", (PyCFunction)(void (*)(void))accel_stream_write, METH_FASTCALL,
     "stream_write(uv, slot, data, n): lib.uvc_write, without the cffi call for bytes."},
    {NULL}
};

static PyMethodDef Accel_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))Accel_call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None): asyncio's call_soon."},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))Accel_call_soon_threadsafe,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe(callback, *args, context=None): asyncio's call_soon_threadsafe."},
    {"call_later", (PyCFunction)(void (*)(void))Accel_call_later, METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None): asyncio's call_later."},
    {"call_at", (PyCFunction)(void (*)(void))Accel_call_at, METH_FASTCALL | METH_KEYWORDS,
     "call_at(when, callback, *args, context=None): asyncio's call_at."},
    {"handle", (PyCFunction)(void (*)(void))Accel_handle, METH_FASTCALL,
     "handle(callback, args): an asyncio.Handle, not scheduled."},
    {"run_handles", (PyCFunction)(void (*)(void))Accel_run_handles, METH_FASTCALL,
     "run_handles(next_handle, ntodo): run a batch of ready handles."},
    {"run_once", (PyCFunction)Accel_run_once, METH_NOARGS,
     "run_once(): one iteration of the loop (loop/_core.py's _run_once)."},
    {"create_task", (PyCFunction)(void (*)(void))Accel_create_task, METH_FASTCALL | METH_KEYWORDS,
     "create_task(coro, *, name=None, context=None): asyncio's create_task."},
    {"create_future", (PyCFunction)Accel_create_future, METH_NOARGS,
     "create_future(): an asyncio.Future attached to the loop."},
    {"dispatch", (PyCFunction)Accel_dispatch, METH_O,
     "dispatch(n): hand the last run's n events to their slot owners."},
    {NULL}
};

static PyTypeObject AccelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uvcffi._accel.Accel",
    .tp_doc = "The accelerated scheduling and dispatch paths of one uvcffi loop.",
    .tp_basicsize = sizeof(Accel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Accel_init,
    .tp_dealloc = (destructor)Accel_dealloc,
    .tp_traverse = (traverseproc)Accel_traverse,
    .tp_clear = (inquiry)Accel_clear,
    .tp_methods = Accel_methods,
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "uvcffi._accel",
    "The CPython accelerator of uvcffi's loop (see csrc/cpython/accel.c).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__accel(void) {
    if (PyType_Ready(&AccelType) < 0 || PyType_Ready(&StreamWriteType) < 0 ||
        PyType_Ready(&SlotMethodType) < 0)
        return NULL;
    if (!(s_uv_read = PyUnicode_InternFromString("_uv_read")) ||
        !(s_uv_read_at = PyUnicode_InternFromString("_uv_read_at")) ||
        !(s_uv_readable = PyUnicode_InternFromString("_uv_readable")) ||
        !(s_uv_recv = PyUnicode_InternFromString("_uv_recv")) ||
        !(s_uv_recv_ended = PyUnicode_InternFromString("_uv_recv_ended")) ||
        !(s_uv_event = PyUnicode_InternFromString("_uv_event")) ||
        !(s_uv_closed = PyUnicode_InternFromString("_uv_closed")) ||
        !(s_write_partial = PyUnicode_InternFromString("_write_partial")) ||
        !(s_loop_kwname = Py_BuildValue("(s)", "loop")) ||
        !(s_dispatch_backlog = PyUnicode_InternFromString("_dispatch_backlog")) ||
        !(s_keep_due = PyUnicode_InternFromString("_keep_due")) ||
        !(s_keep_lost_run = PyUnicode_InternFromString("_keep_lost_run")) ||
        !(s_one = PyLong_FromLong(1)) ||
        !(s_task_factory = PyUnicode_InternFromString("_task_factory")))
        return NULL;
    PyObject *heapq = PyImport_ImportModule("_heapq");
    if (heapq == NULL)
        return NULL;
    s_heappop = PyObject_GetAttrString(heapq, "heappop");
    Py_DECREF(heapq);
    if (s_heappop == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&AccelType);
    if (PyModule_AddObject(m, "Accel", (PyObject *)&AccelType) < 0) {
        Py_DECREF(&AccelType);
        Py_DECREF(m);
        return NULL;
    }
    PyTypeObject *types[] = {&StreamWriteType, &SlotMethodType};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, types[i]->tp_name + strlen("uvcffi._accel."),
                               (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
