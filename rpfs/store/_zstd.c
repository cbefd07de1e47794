/* zstd decompression for reading a repository, through the system's libzstd
 * (rpfs/store/zstd.py; the zstandard package is the reference twin and the fallback).
 *
 * Why: the zstandard wheel's extension is 11.6 MB with its debug information, and a cold
 * start reads all of it (the disk's read-ahead is larger than the file): ~13 MB and ~20 ms
 * of every cold mount, for the one call a reader needs. libzstd.so.1 is 0.8 MB.
 *
 *   content_size(src) -> int        the first frame's declared size, -1 if it declares none
 *   decompress(src, capacity, window_max, across) -> bytes
 *   decompress_into(src, out, window_max, across) -> int   (bytes written into ``out``)
 *
 * ``across`` false: the first frame only (what follows it is ignored, as zstandard's
 * ``decompress``); true: every frame of ``src`` (as a stream reader across frames, and
 * trailing bytes that are no frame are an error). Output beyond ``capacity`` (or ``out``)
 * is an error, never a larger allocation, and a frame whose window is larger than
 * ``window_max`` is refused (as zstandard's ``max_window_size``) though one-shot decoding
 * would not need it. Errors raise ``Error`` (a ValueError). The GIL is released while
 * decoding; each thread keeps one decompression context. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
/* for ZSTD_getFrameHeader (exported by libzstd.so; "experimental" since 2016, unchanged) */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

static PyObject *Error;
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;

static void
free_dctx(void *p)
{
    ZSTD_freeDCtx((ZSTD_DCtx *)p);
}

static void
make_key(void)
{
    (void)pthread_key_create(&dctx_key, free_dctx);
}

/* This thread's context (freed when the thread ends), or NULL if out of memory. */
static ZSTD_DCtx *
thread_dctx(void)
{
    ZSTD_DCtx *d;
    pthread_once(&dctx_once, make_key);
    d = pthread_getspecific(dctx_key);
    if (d == NULL) {
        d = ZSTD_createDCtx();
        if (d != NULL && pthread_setspecific(dctx_key, d) != 0) {
            ZSTD_freeDCtx(d);
            d = NULL;
        }
    }
    return d;
}

/* Why a decode failed: a libzstd error name, or one of ours (static strings). */
typedef struct {
    const char *what;           /* with has_value: a format with one %llu */
    unsigned long long value;   /* a declared size or window */
    int has_value;
} failure;

/* Decode the frames of src into dst (capacity cap). Returns the bytes written, or -1 with
 * ``why`` set. Runs without the GIL. */
static Py_ssize_t
decode(ZSTD_DCtx *dctx, const char *src, size_t size, char *dst, size_t cap,
       unsigned long long window_max, int across, failure *why)
{
    size_t pos = 0, out = 0;
    do {
        size_t rest = size - pos, frame, n;
        ZSTD_frameHeader h;
        size_t r = ZSTD_getFrameHeader(&h, src + pos, rest);
        if (ZSTD_isError(r)) {
            why->what = ZSTD_getErrorName(r);
            return -1;
        }
        if (r != 0) {
            why->what = "truncated frame header";
            return -1;
        }
        if (h.frameType == ZSTD_frame) {
            if (h.windowSize > window_max) {
                why->what = "frame requires too much memory for decoding (a window of %llu bytes)";
                why->value = h.windowSize;
                why->has_value = 1;
                return -1;
            }
            if (h.frameContentSize != ZSTD_CONTENTSIZE_UNKNOWN && h.frameContentSize > cap - out) {
                why->what = "frame declares %llu bytes, more than there is room for";
                why->value = h.frameContentSize;
                why->has_value = 1;
                return -1;
            }
        }
        frame = ZSTD_findFrameCompressedSize(src + pos, rest);
        if (ZSTD_isError(frame)) {
            why->what = ZSTD_getErrorName(frame);
            return -1;
        }
        n = ZSTD_decompressDCtx(dctx, dst + out, cap - out, src + pos, frame);
        if (ZSTD_isError(n)) {
            why->what = ZSTD_getErrorName(n);
            return -1;
        }
        out += n;
        pos += frame;
    } while (across && pos < size);
    return (Py_ssize_t)out;
}

static PyObject *
raise_failure(const failure *why)
{
    if (why->has_value)
        PyErr_Format(Error, why->what, why->value);
    else
        PyErr_SetString(Error, why->what);
    return NULL;
}

static int
window_arg(PyObject *arg, unsigned long long *out)
{
    *out = PyLong_AsUnsignedLongLong(arg);
    return !(*out == (unsigned long long)-1 && PyErr_Occurred());
}

static PyObject *
py_content_size(PyObject *self, PyObject *arg)
{
    Py_buffer src;
    unsigned long long n;
    if (PyObject_GetBuffer(arg, &src, PyBUF_SIMPLE) < 0)
        return NULL;
    n = ZSTD_getFrameContentSize(src.buf, (size_t)src.len);
    PyBuffer_Release(&src);
    if (n == ZSTD_CONTENTSIZE_ERROR) {
        PyErr_SetString(Error, "error when determining content size");
        return NULL;
    }
    if (n == ZSTD_CONTENTSIZE_UNKNOWN)
        return PyLong_FromLong(-1);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
py_decompress(PyObject *self, PyObject *args)
{
    Py_buffer src;
    Py_ssize_t cap, n = -1;
    PyObject *window, *result = NULL;
    unsigned long long window_max;
    int across;
    failure why = {0};
    ZSTD_DCtx *dctx;
    if (!PyArg_ParseTuple(args, "y*nOp", &src, &cap, &window, &across))
        return NULL;
    if (cap < 0 || !window_arg(window, &window_max)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "negative capacity");
        goto done;
    }
    if ((dctx = thread_dctx()) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if ((result = PyBytes_FromStringAndSize(NULL, cap)) == NULL)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    n = decode(dctx, src.buf, (size_t)src.len, PyBytes_AS_STRING(result), (size_t)cap,
               window_max, across, &why);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        Py_CLEAR(result);
        raise_failure(&why);
    } else if (n != cap) {
        _PyBytes_Resize(&result, n);
    }
done:
    PyBuffer_Release(&src);
    return result;
}

static PyObject *
py_decompress_into(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    Py_ssize_t n;
    PyObject *window;
    unsigned long long window_max;
    int across;
    failure why = {0};
    ZSTD_DCtx *dctx;
    if (!PyArg_ParseTuple(args, "y*w*Op", &src, &dst, &window, &across))
        return NULL;
    if (!window_arg(window, &window_max)) {
        n = -2;
    } else if ((dctx = thread_dctx()) == NULL) {
        PyErr_NoMemory();
        n = -2;
    } else {
        Py_BEGIN_ALLOW_THREADS
        n = decode(dctx, src.buf, (size_t)src.len, dst.buf, (size_t)dst.len, window_max,
                   across, &why);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (n == -2)
        return NULL;
    if (n < 0)
        return raise_failure(&why);
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"content_size", py_content_size, METH_O,
     "content_size(src) -> int: the first frame's declared size, -1 if none"},
    {"decompress", py_decompress, METH_VARARGS,
     "decompress(src, capacity, window_max, across) -> bytes"},
    {"decompress_into", py_decompress_into, METH_VARARGS,
     "decompress_into(src, out, window_max, across) -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_zstd", "zstd decompression through libzstd (rpfs/store/zstd.py)",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__zstd(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Error = PyErr_NewException("rpfs.store._zstd.Error", PyExc_ValueError, NULL);
    if (Error == NULL || PyModule_AddObjectRef(m, "Error", Error) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
