/* The per-block arithmetic of BitLocker's ciphers (see fvecrypt.py for the Python twins):
 * XTS tweak sequence, CBC chaining XOR, and Elephant's diffuser with its sector key XOR.
 * AES itself is done by the caller with the `cryptography` package. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Little-endian loads and stores; memcpy compiles to one move on x86/ARM */
static uint32_t rd32(const unsigned char *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v; memcpy(&v, p, 4); return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}
static void wr32(unsigned char *p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 4);
#else
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
#endif
}
static uint64_t rd64(const unsigned char *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}
static void wr64(unsigned char *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }
static inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> ((32 - r) & 31)); }  /* r = 0: x */

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
            wr64(q + j, rd64(q + j) ^ rd64(prev));
            wr64(q + j + 8, rd64(q + j + 8) ^ rd64(prev + 8));
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

/* The diffusers run over LANES sectors at once, one sector per lane (word i of every
 * sector in one row), so the compiler turns each step into SIMD instructions: a sector's
 * own steps depend on each other, but different sectors do not. */
#define LANES 32
typedef uint32_t row_t[LANES];

static inline __attribute__((always_inline)) void step(row_t *d, Py_ssize_t i, Py_ssize_t a, Py_ssize_t b, int r, int add) {
    uint32_t *restrict di = d[i];  /* i, a and b are three different rows */
    const uint32_t *restrict da = d[a];
    const uint32_t *restrict db = d[b];
    uint32_t t[LANES];
    for (int l = 0; l < LANES; l++) t[l] = da[l] ^ rotl(db[l], r);
    if (add)
        for (int l = 0; l < LANES; l++) di[l] += t[l];
    else
        for (int l = 0; l < LANES; l++) di[l] -= t[l];
}

/* One decryption step with a constant rotation, no wrap-around (the read path's hot loop:
 * constant shifts, and none at all where the rotation is 0). */
#define ADD_STEP(i, a, b, r) do {                                                  \
        uint32_t *restrict di_ = d[i];                                             \
        const uint32_t *restrict da_ = d[a], *restrict db_ = d[b];                 \
        for (int l = 0; l < LANES; l++)                                            \
            di_[l] += da_[l] ^ ((db_[l] << (r)) | (db_[l] >> ((32 - (r)) & 31)));  \
    } while (0)

static inline __attribute__((always_inline)) void diffuse_group(row_t *d, Py_ssize_t n, int decrypt) {
    Py_ssize_t i;
    if (decrypt) {  /* n is a multiple of 4 and at least 16 */
        for (int c = 0; c < 3; c++) {  /* B: d[i] += d[i+2] ^ rotl(d[i+5], Rb[i mod 4]) */
            for (i = 0; i + 4 <= n - 5; i += 4) {
                ADD_STEP(i, i + 2, i + 5, 0);
                ADD_STEP(i + 1, i + 3, i + 6, 10);
                ADD_STEP(i + 2, i + 4, i + 7, 0);
                ADD_STEP(i + 3, i + 5, i + 8, 25);
            }
            for (; i < n; i++) step(d, i, wrap(i + 2, n), wrap(i + 5, n), ROT_B[i & 3], 1);
        }
        for (int c = 0; c < 5; c++) {  /* A: d[i] += d[i-2] ^ rotl(d[i-5], Ra[i mod 4]) */
            for (i = 0; i < 8; i++) step(d, i, wrap(i - 2, n), wrap(i - 5, n), ROT_A[i & 3], 1);
            for (; i < n; i += 4) {
                ADD_STEP(i, i - 2, i - 5, 9);
                ADD_STEP(i + 1, i - 1, i - 4, 0);
                ADD_STEP(i + 2, i, i - 3, 13);
                ADD_STEP(i + 3, i + 1, i - 2, 0);
            }
        }
    } else {  /* the inverse: the same steps undone in reverse order */
        for (int c = 0; c < 5; c++)
            for (i = n - 1; i >= 0; i--) step(d, i, wrap(i - 2, n), wrap(i - 5, n), ROT_A[i & 3], 0);
        for (int c = 0; c < 3; c++)
            for (i = n - 1; i >= 0; i--) step(d, i, wrap(i + 2, n), wrap(i + 5, n), ROT_B[i & 3], 0);
    }
}

/* Diffuse ``count`` sectors at ``buf``; ``keys`` (32 bytes per sector, may be NULL) is the
 * sector key, XORed in before encrypting or after decrypting. */
/* Built for the widest vector unit the CPU has (chosen once at load by the dynamic
 * linker): AVX-512 runs 16 lanes per instruction, AVX2 8, the x86-64 baseline (SSE2) 4. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)  /* ifunc */
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Diffuse ``count`` sectors read from ``buf`` and written to ``out`` (may be ``buf``).
 * Decrypting with ``ct`` (the ciphertext) and ``ivs`` (16 bytes per sector), ``buf`` holds
 * the sectors' AES-ECB decryption and the CBC chaining XOR is done as the words are loaded:
 * CBC, diffusers and sector key in one pass over each sector. */
VECTOR_CLONES
static void diffuse_cbc(const unsigned char *buf, unsigned char *out, Py_ssize_t count,
                        Py_ssize_t ss, int decrypt, const unsigned char *keys,
                        const unsigned char *ct, const unsigned char *ivs) {
    static __thread row_t d[1024];
    Py_ssize_t n = ss / 4;
    if (n < 16 || n > 1024) return;  /* callers check 64 <= ss <= 4096 */
    for (Py_ssize_t s0 = 0; s0 < count; s0 += LANES) {
        int lanes = count - s0 < LANES ? (int)(count - s0) : LANES;
        memset(d, 0, sizeof(row_t) * n);
        for (int l = 0; l < lanes; l++) {
            const unsigned char *p = buf + (s0 + l) * ss, *k = keys ? keys + 32 * (s0 + l) : NULL;
            for (Py_ssize_t i = 0; i < n; i++)
                d[i][l] = rd32(p + 4 * i) ^ (k && !decrypt ? rd32(k + 4 * (i & 7)) : 0);
            if (ct) {   /* CBC: block j ^= ciphertext block j-1, block 0 ^= the IV */
                const unsigned char *c = ct + (s0 + l) * ss, *v = ivs + 16 * (s0 + l);
                for (Py_ssize_t i = 0; i < 4; i++) d[i][l] ^= rd32(v + 4 * i);
                for (Py_ssize_t i = 4; i < n; i++) d[i][l] ^= rd32(c + 4 * (i - 4));
            }
        }
        diffuse_group(d, n, decrypt);
        for (int l = 0; l < lanes; l++) {
            unsigned char *p = out + (s0 + l) * ss;
            const unsigned char *k = keys ? keys + 32 * (s0 + l) : NULL;
            for (Py_ssize_t i = 0; i < n; i++)
                wr32(p + 4 * i, d[i][l] ^ (k && decrypt ? rd32(k + 4 * (i & 7)) : 0));
        }
    }
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
    Py_BEGIN_ALLOW_THREADS
    diffuse_cbc(buf.buf, buf.buf, buf.len / ss, ss, decrypt, keys.buf, NULL, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (keys.buf) PyBuffer_Release(&keys);
    Py_RETURN_NONE;
}
static PyObject *elephant_decrypt(PyObject *self, PyObject *args) { return elephant(args, 1); }
static PyObject *elephant_encrypt(PyObject *self, PyObject *args) { return elephant(args, 0); }

/* cbc_elephant_decrypt(out, ecb, ciphertext, ivs, keys, sector_size): whole sectors of
 * AES-CBC + Elephant decrypted into ``out`` from ``ecb`` (their AES-ECB decryption): the
 * CBC chaining, both diffusers and the sector key XOR in one pass */
static PyObject *cbc_elephant_decrypt(PyObject *self, PyObject *args) {
    Py_buffer out, ecb, ct, iv, keys;
    Py_ssize_t ss;
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*n", &out, &ecb, &ct, &iv, &keys, &ss)) return NULL;
    Py_ssize_t count = ss > 0 ? ecb.len / ss : 0;
    PyObject *res = NULL;
    if (check_sectors(ecb.len, ss) < 0)
        goto done;
    if (ss > 4096 || out.len < ecb.len || ct.len < ecb.len || iv.len < count * 16 ||
        keys.len < count * 32) {
        PyErr_SetString(PyExc_ValueError, "sector larger than 4096, or short output, "
                        "ciphertext, IVs or keys");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    diffuse_cbc(ecb.buf, out.buf, count, ss, 1, keys.buf, ct.buf, iv.buf);
    Py_END_ALLOW_THREADS
    res = Py_None;
    Py_INCREF(res);
done:
    PyBuffer_Release(&out); PyBuffer_Release(&ecb); PyBuffer_Release(&ct);
    PyBuffer_Release(&iv); PyBuffer_Release(&keys);
    return res;
}

/* counters(first, count, step, elephant=False) -> count little-endian 128-bit numbers
 * first, first + step, ... (the plaintext of XTS tweaks and CBC IVs); with ``elephant``
 * each is followed by the same number with its top byte 0x80 (Elephant's sector key). */
static PyObject *counters(PyObject *self, PyObject *args) {
    unsigned long long first, step;
    Py_ssize_t count;
    int pair = 0;
    if (!PyArg_ParseTuple(args, "KnK|p", &first, &count, &step, &pair)) return NULL;
    Py_ssize_t width = pair ? 32 : 16;
    if (count < 0 || count > PY_SSIZE_T_MAX / width) {
        PyErr_SetString(PyExc_ValueError, "bad count");
        return NULL;
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, count * width);
    if (!res) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(res);
    for (Py_ssize_t i = 0; i < count; i++, p += width) {
        uint64_t v = first + (uint64_t)i * step;
        wr64(p, v); wr64(p + 8, 0);
        if (pair) { wr64(p + 16, v); wr64(p + 24, (uint64_t)1 << 63); }
    }
    return res;
}

static PyMethodDef methods[] = {
    {"counters", counters, METH_VARARGS, "128-bit little-endian counters (tweaks, IVs)"},
    {"xts_xor", xts_xor, METH_VARARGS, "XOR with the XTS tweak sequence of each sector"},
    {"cbc_xor", cbc_xor, METH_VARARGS, "CBC chaining XOR after an ECB decryption"},
    {"elephant_decrypt", elephant_decrypt, METH_VARARGS, "undo the Elephant diffusers B, A"},
    {"elephant_encrypt", elephant_encrypt, METH_VARARGS, "apply the Elephant diffusers A, B"},
    {"cbc_elephant_decrypt", cbc_elephant_decrypt, METH_VARARGS,
     "CBC chaining, Elephant diffusers and sector keys in one pass, into a buffer"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fvecrypt", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fvecrypt(void) { return PyModule_Create(&module); }
