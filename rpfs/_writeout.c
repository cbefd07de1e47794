/* rpfs._writeout: restore's small files written in one call per batch.
 *
 * Creating, writing, timing and closing a small file is four system calls. Made from
 * Python, each one releases and retakes the GIL, and with the restore's pool of writers
 * that handover cost more kernel time (futex) than the files themselves. Here a batch of
 * files is written with the GIL released once.
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
    for (; ready < n; ready++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, ready), *name, *data, *times;
        job_t *j = &jobs[ready];
        unsigned int mode;
        if (!PyArg_ParseTuple(item, "iO!IOO;a file is (dirfd, name, mode, data, times)",
                              &j->dirfd, &PyBytes_Type, &name, &mode, &data, &times))
            goto done;
        if (!one_component(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))) {
            PyErr_Format(PyExc_ValueError, "not one path component: %R", name);
            goto done;
        }
        if (mode & ~07777u) {
            PyErr_SetString(PyExc_ValueError, "mode has bits beyond 07777");
            goto done;
        }
        j->name = PyBytes_AS_STRING(name);   /* kept alive by the tuple in ``fast`` */
        j->mode = (mode_t)mode;
        if (times != Py_None) {
            if (!PyTuple_Check(times) || PyTuple_GET_SIZE(times) != 2) {
                PyErr_SetString(PyExc_TypeError, "times is (atime_ns, mtime_ns) or None");
                goto done;
            }
            int a = to_timespec(PyTuple_GET_ITEM(times, 0), &j->ts[0]);
            int m = a < 0 ? -1 : to_timespec(PyTuple_GET_ITEM(times, 1), &j->ts[1]);
            if (a < 0 || m < 0)
                goto done;
            if (a || m)
                j->bad_times = 1;
            else
                j->times = 1;
        }
        if (data != Py_None) {
            if (PyObject_GetBuffer(data, &j->data, PyBUF_SIMPLE) < 0)
                goto done;
            j->has_data = 1;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        write_one(&jobs[i]);
    Py_END_ALLOW_THREADS
    result = PyList_New(0);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        if (!jobs[i].stage)
            continue;
        PyObject *t = Py_BuildValue("(nii)", i, jobs[i].stage, jobs[i].err);
        if (!t || PyList_Append(result, t) < 0)
            Py_CLEAR(result);
        Py_XDECREF(t);
    }
done:
    if (jobs) {
        for (Py_ssize_t i = 0; i < ready && i < n; i++)
            if (jobs[i].has_data)
                PyBuffer_Release(&jobs[i].data);
        /* a job that failed to parse may hold a buffer too */
        if (ready < n && jobs[ready].has_data)
            PyBuffer_Release(&jobs[ready].data);
        PyMem_Free(jobs);
    }
    Py_DECREF(fast);
    return result;
}

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
    return m;
}
