/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as VHDX, ext4, XFS and btrfs
 * checksum their metadata. streams.crc32c wraps it; the `crc32c` package is the fallback and
 * the test oracle (tests/test_crc32c.py). Ours because importing the package costs
 * importlib.metadata (~12 ms) on every command that opens a VHDX.
 *
 * crc32c(data, value=0) -> int: `value` is a previous result, so
 * crc32c(b, crc32c(a)) == crc32c(a + b). The SSE 4.2 instruction when the CPU has it
 * (checked once at import), else tables read 8 bytes at a time. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define POLY 0x82F63B78u
#define NOGIL_BYTES 65536   /* release the GIL for buffers at least this long */

static uint32_t table[8][256];
static int have_sse42;

static void make_tables(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            table[t][n] = (table[t - 1][n] >> 8) ^ table[0][table[t - 1][n] & 0xFF];
}

static uint32_t crc_tables(uint32_t crc, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;   /* little-endian: the low 4 bytes take the running CRC */
        crc = table[7][w & 0xFF] ^ table[6][(w >> 8) & 0xFF] ^
              table[5][(w >> 16) & 0xFF] ^ table[4][(w >> 24) & 0xFF] ^
              table[3][(w >> 32) & 0xFF] ^ table[2][(w >> 40) & 0xFF] ^
              table[1][(w >> 48) & 0xFF] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86 1
__attribute__((target("sse4.2")))
static uint32_t crc_sse42(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
#ifdef HAVE_X86
    if (have_sse42)
        return crc_sse42(crc, p, n);
#endif
    return crc_tables(crc, p, n);
}

static PyObject *py_crc32c(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k:crc32c", &buf, &value))
        return NULL;
    uint32_t crc = ~(uint32_t)value;
    if (buf.len >= NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        crc = crc_update(crc, buf.buf, (size_t)buf.len);
        Py_END_ALLOW_THREADS
    } else {
        crc = crc_update(crc, buf.buf, (size_t)buf.len);
    }
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(~crc);
}

static PyObject *py_table_crc32c(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k:table_crc32c", &buf, &value))
        return NULL;
    uint32_t crc = ~crc_tables(~(uint32_t)value, buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(crc);
}

static PyMethodDef methods[] = {
    {"crc32c", py_crc32c, METH_VARARGS,
     "crc32c(data, value=0) -> CRC-32C of data, continuing from a previous result value."},
    {"table_crc32c", py_table_crc32c, METH_VARARGS,
     "The same without the SSE 4.2 instruction (so a test covers both paths)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_crc32c", "CRC-32C (Castagnoli).", -1, methods,
};

PyMODINIT_FUNC PyInit__crc32c(void)
{
    make_tables();
#ifdef HAVE_X86
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2") != 0;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "hardware", have_sse42) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
