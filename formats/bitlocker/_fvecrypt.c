/* The per-block arithmetic of BitLocker's ciphers (see fvecrypt.py for the Python twins):
 * XTS tweak sequence, CBC chaining XOR, and Elephant's diffuser with its sector key XOR.
 * AES itself is done by the caller with the `cryptography` package. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static uint64_t rd64(const unsigned char *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}
static void wr64(unsigned char *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> ((32 - r) & 31)); }  /* r = 0: x */

static int check_sectors(Py_ssize_t len, Py_ssize_t sector_size) {
    if (sector_size < 64 || sector_size % 16 || len % sector_size) {
        PyErr_SetString(PyExc_ValueError, "buffer is not a whole number of sectors");
        return -1;
    }
    return 0;
}

/* xts_xor(buf, tweaks, sector_size): block j of sector s ^= tweaks[s] * alpha^j */
static PyObject *xts_xor(PyObject *self, PyObject *args) {
    Py_buffer buf, tw;
    Py_ssize_t ss;
    if (!PyArg_ParseTuple(args, "w*y*n", &buf, &tw, &ss)) return NULL;
    if (check_sectors(buf.len, ss) < 0 || tw.len < buf.len / ss * 16) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "too few tweaks");
        PyBuffer_Release(&buf); PyBuffer_Release(&tw); return NULL;
    }
    unsigned char *p = buf.buf;
    const unsigned char *t = tw.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < buf.len / ss; s++) {
        uint64_t lo = rd64(t + 16 * s), hi = rd64(t + 16 * s + 8);
        unsigned char *q = p + s * ss;
        for (Py_ssize_t j = 0; j < ss; j += 16) {
            wr64(q + j, rd64(q + j) ^ lo);
            wr64(q + j + 8, rd64(q + j + 8) ^ hi);
            uint64_t carry = hi >> 63;
            hi = (hi << 1) | (lo >> 63);
            lo = (lo << 1) ^ (carry ? 0x87 : 0);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf); PyBuffer_Release(&tw);
    Py_RETURN_NONE;
}

/* cbc_xor(buf, ciphertext, ivs, sector_size): CBC chaining after an ECB decryption */
static PyObject *cbc_xor(PyObject *self, PyObject *args) {
    Py_buffer buf, ct, iv;
    Py_ssize_t ss;
    if (!PyArg_ParseTuple(args, "w*y*y*n", &buf, &ct, &iv, &ss)) return NULL;
    if (check_sectors(buf.len, ss) < 0 || ct.len < buf.len || iv.len < buf.len / ss * 16) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "short ciphertext or IVs");
        PyBuffer_Release(&buf); PyBuffer_Release(&ct); PyBuffer_Release(&iv); return NULL;
    }
    unsigned char *p = buf.buf;
    const unsigned char *c = ct.buf, *v = iv.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < buf.len / ss; s++) {
        unsigned char *q = p + s * ss;
        const unsigned char *prev = v + 16 * s;
        for (Py_ssize_t j = 0; j < ss; j += 16) {
            for (int k = 0; k < 16; k++) q[j + k] ^= prev[k];
            prev = c + s * ss + j;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf); PyBuffer_Release(&ct); PyBuffer_Release(&iv);
    Py_RETURN_NONE;
}

static const int ROT_A[4] = {9, 0, 13, 0}, ROT_B[4] = {0, 10, 0, 25};

/* index i + k wrapped into [0, n) for 0 <= i < n and -n < k < n, without a division */
static Py_ssize_t wrap(Py_ssize_t i, Py_ssize_t n) { return i < 0 ? i + n : (i >= n ? i - n : i); }

/* The wrap-around is needed only for the first or last five words, so each pass is split
 * into a short part with wrap() and a long one without. */
static void diffuse(unsigned char *sector, Py_ssize_t ss, int decrypt, const unsigned char *key) {
    uint32_t d[1024];
    Py_ssize_t n = ss / 4, i;
    if (n < 16 || n > 1024) return;  /* callers check 64 <= ss <= 4096 */
    for (i = 0; i < n; i++) d[i] = rd32(sector + 4 * i);
    if (key && !decrypt)  /* encryption starts with the sector key */
        for (i = 0; i < n; i++) d[i] ^= rd32(key + 4 * (i & 7));
    if (decrypt) {
        for (int c = 0; c < 3; c++) {
            for (i = 0; i < n - 5; i++) d[i] += d[i + 2] ^ rotl(d[i + 5], ROT_B[i & 3]);
            for (; i < n; i++) d[i] += d[wrap(i + 2, n)] ^ rotl(d[wrap(i + 5, n)], ROT_B[i & 3]);
        }
        for (int c = 0; c < 5; c++) {
            for (i = 0; i < 5; i++) d[i] += d[wrap(i - 2, n)] ^ rotl(d[wrap(i - 5, n)], ROT_A[i & 3]);
            for (; i < n; i++) d[i] += d[i - 2] ^ rotl(d[i - 5], ROT_A[i & 3]);
        }
    } else {
        for (int c = 0; c < 5; c++) {
            for (i = n - 1; i >= 5; i--) d[i] -= d[i - 2] ^ rotl(d[i - 5], ROT_A[i & 3]);
            for (; i >= 0; i--) d[i] -= d[wrap(i - 2, n)] ^ rotl(d[wrap(i - 5, n)], ROT_A[i & 3]);
        }
        for (int c = 0; c < 3; c++) {
            for (i = n - 1; i >= n - 5; i--)  /* here i + 5 >= n always */
                d[i] -= d[wrap(i + 2, n)] ^ rotl(d[i + 5 - n], ROT_B[i & 3]);
            for (; i >= 0; i--) d[i] -= d[i + 2] ^ rotl(d[i + 5], ROT_B[i & 3]);
        }
    }
    if (key && decrypt)  /* decryption ends with it */
        for (i = 0; i < n; i++) d[i] ^= rd32(key + 4 * (i & 7));
    for (i = 0; i < n; i++) wr32(sector + 4 * i, d[i]);
}

/* elephant_decrypt/encrypt(buf, sector_size[, keys]): the diffusers, and with ``keys`` (32
 * bytes per sector) the sector key XOR too, in one pass over each sector */
static PyObject *elephant(PyObject *args, int decrypt) {
    Py_buffer buf, keys = {0};
    Py_ssize_t ss;
    if (!PyArg_ParseTuple(args, "w*n|y*", &buf, &ss, &keys)) return NULL;
    if (check_sectors(buf.len, ss) < 0 || ss > 4096 ||
        (keys.buf && keys.len < buf.len / ss * 32)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "sector larger than 4096 or too few keys");
        PyBuffer_Release(&buf); if (keys.buf) PyBuffer_Release(&keys); return NULL;
    }
    const unsigned char *k = keys.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t off = 0, s = 0; off < buf.len; off += ss, s++)
        diffuse((unsigned char *)buf.buf + off, ss, decrypt, k ? k + 32 * s : NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (keys.buf) PyBuffer_Release(&keys);
    Py_RETURN_NONE;
}
static PyObject *elephant_decrypt(PyObject *self, PyObject *args) { return elephant(args, 1); }
static PyObject *elephant_encrypt(PyObject *self, PyObject *args) { return elephant(args, 0); }

static PyMethodDef methods[] = {
    {"xts_xor", xts_xor, METH_VARARGS, "XOR with the XTS tweak sequence of each sector"},
    {"cbc_xor", cbc_xor, METH_VARARGS, "CBC chaining XOR after an ECB decryption"},
    {"elephant_decrypt", elephant_decrypt, METH_VARARGS, "undo the Elephant diffusers B, A"},
    {"elephant_encrypt", elephant_encrypt, METH_VARARGS, "apply the Elephant diffusers A, B"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fvecrypt", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fvecrypt(void) { return PyModule_Create(&module); }
