/* glibc's mallopt and malloc_trim for rpfs/heap.py, without ctypes (importing ctypes with
 * libffi was ~7 M instructions of a mount's way to its first listing, for two calls).
 *
 *   mallopt(param: int, value: int) -> int   (1 on success, 0 on error, as glibc)
 *   malloc_trim(pad: int) -> int             (1 if memory was given back)
 *
 * Optional (setup.py): without it, or off glibc, rpfs/heap.py falls back to ctypes. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <malloc.h>

static PyObject *
py_mallopt(PyObject *self, PyObject *args)
{
    int param, value;
    if (!PyArg_ParseTuple(args, "ii", &param, &value))
        return NULL;
    return PyLong_FromLong(mallopt(param, value));
}

static PyObject *
py_malloc_trim(PyObject *self, PyObject *arg)
{
    Py_ssize_t pad = PyLong_AsSsize_t(arg);
    if (pad == -1 && PyErr_Occurred())
        return NULL;
    if (pad < 0) {
        PyErr_SetString(PyExc_ValueError, "negative pad");
        return NULL;
    }
    return PyLong_FromLong(malloc_trim((size_t)pad));
}

static PyMethodDef methods[] = {
    {"mallopt", py_mallopt, METH_VARARGS, "mallopt(param, value) -> int (glibc's mallopt)"},
    {"malloc_trim", py_malloc_trim, METH_O, "malloc_trim(pad) -> int (glibc's malloc_trim)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_malloc", "glibc's mallopt and malloc_trim (rpfs/heap.py)", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__malloc(void)
{
    return PyModule_Create(&module);
}
