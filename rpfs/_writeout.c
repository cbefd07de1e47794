/* rpfs._writeout: restore's small files written in one call per batch.
 *
 * Creating, writing, timing and closing a small file is four system calls. Made from
 * Python, each one releases and retakes the GIL, and with the restore's pool of writers
 * that handover cost more kernel time (futex) than the files themselves. Here a batch of
 * files is written with the GIL released once (write_files), or by a thread of this
 * module's own that never takes the GIL (Writer: the restore's thread slices the next
 * window's files out of their chunks while the writers make the last ones).
 *
 * Each file keeps restore's guarantees: it is created relative to its directory's fd with
 * O_EXCL|O_NOFOLLOW|O_CLOEXEC (never through a link, never over something that exists),
 * its name is one component (checked again here: no '/', no NUL, not "." or ".."), its
 * bytes are written whole, its times set on the fd. Anything else restore does to a file
 * (owners, set-id bits, xattrs, sparse files, hard links, replacing with --overwrite)
 * stays in Python: those files are never handed to this module.
 *
 * The Python twin is Restorer._write_whole (rpfs/restore.py), used when this extension is
 * not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Stages a file can fail at (the second item of a failure). */
enum { STAGE_OPEN = 1, STAGE_WRITE = 2, STAGE_TIMES = 3, STAGE_CLOSE = 4 };

/* System calls made, for the tests that count work per file. */
enum { C_OPENAT, C_PWRITE, C_FUTIMENS, C_CLOSE, C_COUNT };
static unsigned long calls[C_COUNT];

static inline void counted(int which)
{
    __atomic_add_fetch(&calls[which], 1, __ATOMIC_RELAXED);
}

typedef struct {
    int dirfd;
    const char *name;
    mode_t mode;
    Py_buffer data;
    int has_data;
    int times;
    int bad_times;         /* out of a time_t's range: not set, reported as stage 3 */
    struct timespec ts[2];
    int stage;
    int err;
} job_t;

/* nanoseconds since the epoch (possibly negative, possibly beyond 64 bits: NTFS times run
 * to the year 60056) as a timespec, the way os.utime(ns=) splits them; 1 when the seconds
 * do not fit a time_t (the file's times are then not set: stage 3, EOVERFLOW) */
static int to_timespec(PyObject *ns, struct timespec *ts)
{
    static PyObject *billion;
    if (!PyLong_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "times are integers (ns)");
        return -1;
    }
    if (!billion && !(billion = PyLong_FromLong(1000000000L)))
        return -1;
    PyObject *qr = PyNumber_Divmod(ns, billion);   /* floor: nsec in [0, 1e9) */
    if (!qr)
        return -1;
    int overflow = 0;
    long long sec = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(qr, 0), &overflow);
    long nsec = PyLong_AsLong(PyTuple_GET_ITEM(qr, 1));
    Py_DECREF(qr);
    if (PyErr_Occurred())
        return -1;
    if (overflow || (long long)(time_t)sec != sec)
        return 1;
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = nsec;
    return 0;
}

static int one_component(const char *name, Py_ssize_t len)
{
    if (len == 0 || len > 255 || memchr(name, '/', len) || memchr(name, 0, len))
        return 0;
    if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')))
        return 0;
    return 1;
}

static void write_one(job_t *j)
{
    int fd;
    do {
        fd = openat(j->dirfd, j->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    j->mode);
        counted(C_OPENAT);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        j->stage = STAGE_OPEN;
        j->err = errno;
        return;
    }
    if (j->has_data) {
        const char *p = j->data.buf;
        Py_ssize_t left = j->data.len;
        off_t at = 0;
        while (left > 0) {
            ssize_t n = pwrite(fd, p, (size_t)left, at);
            counted(C_PWRITE);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                j->stage = STAGE_WRITE;
                j->err = n < 0 ? errno : EIO;
                break;
            }
            p += n;
            at += n;
            left -= n;
        }
    }
    if (!j->stage && j->bad_times) {
        j->stage = STAGE_TIMES;
        j->err = EOVERFLOW;
    }
    if (!j->stage && j->times) {
        int r;
        do {
            r = futimens(fd, j->ts);
            counted(C_FUTIMENS);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            j->stage = STAGE_TIMES;
            j->err = errno;
        }
    }
    counted(C_CLOSE);
    if (close(fd) < 0 && errno != EINTR && !j->stage) {
        j->stage = STAGE_CLOSE;
        j->err = errno;
    }
}

PyDoc_STRVAR(write_files_doc,
"write_files(files) -> [(index, stage, errno), ...]\n\n"
"Create and write each of ``files``, a sequence of (dirfd, name: bytes, mode, data or None,\n"
"times: (atime_ns, mtime_ns) or None): openat(dirfd, name, O_WRONLY|O_CREAT|O_EXCL|\n"
"O_NOFOLLOW|O_CLOEXEC, mode), pwrite of all of data, futimens, close, with the GIL released.\n"
"Returns the files that failed: stage 1 open (nothing made), 2 write, 3 times, 4 close.");

/* Parse ``fast``'s n files into jobs (the GIL held); ``*ready``: the jobs parsed so far
 * (their buffers to release on failure, with the one that failed half-way). 0 or -1. */
static int parse_files(PyObject *fast, Py_ssize_t n, job_t *jobs, Py_ssize_t *ready)
{
    for (*ready = 0; *ready < n; (*ready)++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, *ready), *name, *data, *times;
        job_t *j = &jobs[*ready];
        unsigned int mode;
        if (!PyArg_ParseTuple(item, "iO!IOO;a file is (dirfd, name, mode, data, times)",
                              &j->dirfd, &PyBytes_Type, &name, &mode, &data, &times))
            return -1;
        if (!one_component(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))) {
            PyErr_Format(PyExc_ValueError, "not one path component: %R", name);
            return -1;
        }
        if (mode & ~07777u) {
            PyErr_SetString(PyExc_ValueError, "mode has bits beyond 07777");
            return -1;
        }
        j->name = PyBytes_AS_STRING(name);   /* kept alive by the tuple in ``fast`` */
        j->mode = (mode_t)mode;
        if (times != Py_None) {
            if (!PyTuple_Check(times) || PyTuple_GET_SIZE(times) != 2) {
                PyErr_SetString(PyExc_TypeError, "times is (atime_ns, mtime_ns) or None");
                return -1;
            }
            int a = to_timespec(PyTuple_GET_ITEM(times, 0), &j->ts[0]);
            int m = a < 0 ? -1 : to_timespec(PyTuple_GET_ITEM(times, 1), &j->ts[1]);
            if (a < 0 || m < 0)
                return -1;
            if (a || m)
                j->bad_times = 1;
            else
                j->times = 1;
        }
        if (data != Py_None) {
            if (PyObject_GetBuffer(data, &j->data, PyBUF_SIMPLE) < 0)
                return -1;
            j->has_data = 1;
        }
    }
    return 0;
}

/* Release the buffers of jobs[0..ready] (the GIL held) and free them. */
static void free_jobs(job_t *jobs, Py_ssize_t ready, Py_ssize_t n)
{
    if (!jobs)
        return;
    for (Py_ssize_t i = 0; i < ready && i < n; i++)
        if (jobs[i].has_data)
            PyBuffer_Release(&jobs[i].data);
    /* a job that failed to parse may hold a buffer too */
    if (ready < n && jobs[ready].has_data)
        PyBuffer_Release(&jobs[ready].data);
    PyMem_Free(jobs);
}

/* Append (prefix..., index, stage, errno) of each failed job to ``out``; 0 or -1. */
static int failures(PyObject *out, long ticket, job_t *jobs, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!jobs[i].stage)
            continue;
        PyObject *t = ticket < 0 ? Py_BuildValue("(nii)", i, jobs[i].stage, jobs[i].err)
                                 : Py_BuildValue("(lnii)", ticket, i, jobs[i].stage, jobs[i].err);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            return -1;
        }
        Py_DECREF(t);
    }
    return 0;
}

static PyObject *write_files(PyObject *self, PyObject *arg)
{
    PyObject *fast = PySequence_Fast(arg, "write_files takes a sequence of files");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), ready = 0;
    job_t *jobs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(job_t));
    PyObject *result = NULL;
    if (!jobs) {
        PyErr_NoMemory();
        goto done;
    }
    if (parse_files(fast, n, jobs, &ready) < 0)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        write_one(&jobs[i]);
    Py_END_ALLOW_THREADS
    result = PyList_New(0);
    if (result && failures(result, -1, jobs, n) < 0)
        Py_CLEAR(result);
done:
    free_jobs(jobs, ready, n);
    Py_DECREF(fast);
    return result;
}

/* ---- Writer: batches written by a thread of its own while the caller goes on ---------
 *
 * A restore's windows of small files were each sliced out of their chunks (Python, the GIL
 * held) and written (here, the GIL released) by one of four pool threads, which handed the
 * GIL among themselves for the slicing. Now the restore's own thread slices every window
 * and submits it; a Writer's thread writes it without ever taking the GIL. Buffers stay
 * held until ``wait`` collects the batch (the GIL held). */

typedef struct batch {
    struct batch *next;
    PyObject *files;          /* the sequence: keeps the names and data alive */
    job_t *jobs;
    Py_ssize_t n;
    long ticket;
} batch_t;

typedef struct {
    PyObject_HEAD
    pthread_t thread;
    int started, stopping;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    batch_t *queue, *queue_tail;      /* to write, in order */
    batch_t *written, *written_tail;  /* written, to collect */
    long submitted, completed;        /* tickets */
} Writer;

static void *writer_main(void *arg)
{
    Writer *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->queue && !w->stopping)
            pthread_cond_wait(&w->work, &w->lock);
        batch_t *b = w->queue;
        if (!b)
            break;                    /* stopping, nothing left */
        w->queue = b->next;
        if (!w->queue)
            w->queue_tail = NULL;
        pthread_mutex_unlock(&w->lock);
        for (Py_ssize_t i = 0; i < b->n; i++)
            write_one(&b->jobs[i]);
        pthread_mutex_lock(&w->lock);
        b->next = NULL;
        if (w->written_tail)
            w->written_tail->next = b;
        else
            w->written = b;
        w->written_tail = b;
        w->completed = b->ticket;
        pthread_cond_broadcast(&w->done);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static PyObject *Writer_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (!_PyArg_NoKeywords("Writer", kw) || !_PyArg_NoPositional("Writer", args))
        return NULL;
    Writer *w = (Writer *)type->tp_alloc(type, 0);
    if (!w)
        return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->done, NULL);
    return (PyObject *)w;
}

PyDoc_STRVAR(submit_doc,
"submit(files) -> ticket\n\n"
"Queue ``files`` (as write_files takes them) for the writer's thread, which makes them as\n"
"write_files does, without the GIL; returns the batch's ticket (1, 2, ...) for wait().");

static PyObject *Writer_submit(Writer *w, PyObject *arg)
{
    if (w->stopping) {
        PyErr_SetString(PyExc_ValueError, "the writer is closed");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(arg, "submit takes a sequence of files");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), ready = 0;
    job_t *jobs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(job_t));
    batch_t *b = PyMem_Calloc(1, sizeof(batch_t));
    if (!jobs || !b) {
        PyErr_NoMemory();
        goto fail;
    }
    if (parse_files(fast, n, jobs, &ready) < 0)
        goto fail;
    if (!w->started) {
        if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
            PyErr_SetString(PyExc_OSError, "cannot start the writer's thread");
            goto fail;
        }
        w->started = 1;
    }
    b->files = fast;
    b->jobs = jobs;
    b->n = n;
    pthread_mutex_lock(&w->lock);
    b->ticket = ++w->submitted;
    if (w->queue_tail)
        w->queue_tail->next = b;
    else
        w->queue = b;
    w->queue_tail = b;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->lock);
    return PyLong_FromLong(b->ticket);
fail:
    free_jobs(jobs, ready, n);
    PyMem_Free(b);
    Py_DECREF(fast);
    return NULL;
}

/* Wait (the GIL released) until batch ``ticket`` is written; the writer's lock is not held
 * on return. */
static void wait_for(Writer *w, long ticket)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&w->lock);
    while (w->completed < ticket)
        pthread_cond_wait(&w->done, &w->lock);
    pthread_mutex_unlock(&w->lock);
    Py_END_ALLOW_THREADS
}

/* Take the written batches up to ``ticket`` off the list (the GIL held). */
static batch_t *take_written(Writer *w, long ticket)
{
    batch_t *first = NULL, **last = &first;
    pthread_mutex_lock(&w->lock);
    while (w->written && w->written->ticket <= ticket) {
        batch_t *b = w->written;
        w->written = b->next;
        b->next = NULL;
        *last = b;
        last = &b->next;
    }
    if (!w->written)
        w->written_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    return first;
}

PyDoc_STRVAR(wait_doc,
"wait(ticket=None) -> [(ticket, index, stage, errno), ...]\n\n"
"Wait until the batch ``ticket`` (None: every batch submitted) and those before it are\n"
"written, release them, and return the files that failed in them (stages as write_files).");

static PyObject *Writer_wait(Writer *w, PyObject *args)
{
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O:wait", &arg))
        return NULL;
    long ticket = arg == Py_None ? w->submitted : PyLong_AsLong(arg);
    if (ticket == -1 && PyErr_Occurred())
        return NULL;
    if (ticket > w->submitted) {
        PyErr_SetString(PyExc_ValueError, "no such batch");
        return NULL;
    }
    wait_for(w, ticket);
    PyObject *result = PyList_New(0);
    batch_t *b = take_written(w, ticket);
    while (b) {
        batch_t *next = b->next;
        if (result && failures(result, b->ticket, b->jobs, b->n) < 0)
            Py_CLEAR(result);
        free_jobs(b->jobs, b->n, b->n);
        Py_DECREF(b->files);
        PyMem_Free(b);
        b = next;
    }
    return result;
}

/* Stop the thread once the queue is written (the GIL released while joining). */
static void writer_stop(Writer *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->lock);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(w->thread, NULL);
    Py_END_ALLOW_THREADS
    w->started = 0;
}

PyDoc_STRVAR(close_doc,
"close()\n\nWrite what is queued, stop the writer's thread and release every batch (their\n"
"failures are not reported: call wait() first).");

static PyObject *Writer_close(Writer *w, PyObject *unused)
{
    writer_stop(w);
    w->stopping = 1;
    batch_t *b = take_written(w, w->submitted);
    while (b) {
        batch_t *next = b->next;
        free_jobs(b->jobs, b->n, b->n);
        Py_DECREF(b->files);
        PyMem_Free(b);
        b = next;
    }
    Py_RETURN_NONE;
}

static void Writer_dealloc(Writer *w)
{
    PyObject *r = Writer_close(w, NULL);
    Py_XDECREF(r);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyMethodDef Writer_methods[] = {
    {"submit", (PyCFunction)Writer_submit, METH_O, submit_doc},
    {"wait", (PyCFunction)Writer_wait, METH_VARARGS, wait_doc},
    {"close", (PyCFunction)Writer_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Writer_doc,
"Writer()\n\nA thread of its own that writes submitted batches of files in order, without\n"
"the GIL (see submit, wait, close).");

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._writeout.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Writer_doc,
    .tp_methods = Writer_methods,
    .tp_new = Writer_new,
};

PyDoc_STRVAR(counts_doc,
"counts() -> dict: the system calls this module has made (openat, pwrite, futimens, close),\n"
"for tests that count the work per file.");

static PyObject *counts(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{s:k,s:k,s:k,s:k}",
                         "openat", __atomic_load_n(&calls[C_OPENAT], __ATOMIC_RELAXED),
                         "pwrite", __atomic_load_n(&calls[C_PWRITE], __ATOMIC_RELAXED),
                         "futimens", __atomic_load_n(&calls[C_FUTIMENS], __ATOMIC_RELAXED),
                         "close", __atomic_load_n(&calls[C_CLOSE], __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"write_files", write_files, METH_O, write_files_doc},
    {"counts", counts, METH_NOARGS, counts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rpfs._writeout",
    "Restore's small files written in one call per batch, the GIL released once.", -1, methods,
};

PyMODINIT_FUNC PyInit__writeout(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "STAGE_OPEN", STAGE_OPEN) < 0
              || PyModule_AddIntConstant(m, "STAGE_WRITE", STAGE_WRITE) < 0
              || PyModule_AddIntConstant(m, "STAGE_TIMES", STAGE_TIMES) < 0
              || PyModule_AddIntConstant(m, "STAGE_CLOSE", STAGE_CLOSE) < 0))
        Py_CLEAR(m);
    if (m && (PyType_Ready(&WriterType) < 0
              || PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0))
        Py_CLEAR(m);
    return m;
}
