/* The per-block arithmetic of BitLocker's ciphers (see fvecrypt.py for the Python twins):
 * XTS tweak sequence, CBC chaining XOR, and Elephant's diffuser with its sector key XOR;
 * and AES-ECB decryption where the CPU has AES instructions (else the caller uses the
 * `cryptography` package, as it does for all encryption), with which AES-CBC + Elephant
 * sectors are decrypted from their ciphertext in one call (cbc_elephant_sectors). */
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

/* xts_xor(buf, tweaks, sector_size, src=None): block j of sector s of buf = (that block of
 * src, or of buf itself) ^ tweaks[s] * alpha^j. With ``src`` the copy before the XOR is the
 * XOR itself: one pass over the data, not two. */
static PyObject *xts_xor(PyObject *self, PyObject *args) {
    Py_buffer buf, tw, src = {0};
    Py_ssize_t ss;
    if (!PyArg_ParseTuple(args, "w*y*n|y*", &buf, &tw, &ss, &src)) return NULL;
    if (check_sectors(buf.len, ss) < 0 || tw.len < buf.len / ss * 16 ||
        (src.obj && src.len < buf.len)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "too few tweaks or short src");
        PyBuffer_Release(&buf); PyBuffer_Release(&tw); PyBuffer_Release(&src); return NULL;
    }
    unsigned char *p = buf.buf;
    const unsigned char *in = src.obj ? (const unsigned char *)src.buf : p;
    const unsigned char *t = tw.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < buf.len / ss; s++) {
        uint64_t lo = rd64(t + 16 * s), hi = rd64(t + 16 * s + 8);
        unsigned char *q = p + s * ss;
        const unsigned char *r = in + s * ss;
        for (Py_ssize_t j = 0; j < ss; j += 16) {
            wr64(q + j, rd64(r + j) ^ lo);
            wr64(q + j + 8, rd64(r + j + 8) ^ hi);
            uint64_t carry = hi >> 63;
            hi = (hi << 1) | (lo >> 63);
            lo = (lo << 1) ^ (carry ? 0x87 : 0);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf); PyBuffer_Release(&tw); PyBuffer_Release(&src);
    Py_RETURN_NONE;
}

/* cbc_xor(buf, ciphertext, ivs, sector_size, src=None): CBC chaining after an ECB
 * decryption: block j of sector s of buf = (that block of src, the ECB output, or of buf
 * itself) ^ ciphertext block j-1 (the IV for j = 0). A sector is done from its last block
 * back, so buf may be the ciphertext itself (each block is written after the one it needs). */
static PyObject *cbc_xor(PyObject *self, PyObject *args) {
    Py_buffer buf, ct, iv, src = {0};
    Py_ssize_t ss;
    if (!PyArg_ParseTuple(args, "w*y*y*n|y*", &buf, &ct, &iv, &ss, &src)) return NULL;
    if (check_sectors(buf.len, ss) < 0 || ct.len < buf.len || iv.len < buf.len / ss * 16 ||
        (src.obj && src.len < buf.len)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "short ciphertext, IVs or src");
        PyBuffer_Release(&buf); PyBuffer_Release(&ct); PyBuffer_Release(&iv);
        PyBuffer_Release(&src); return NULL;
    }
    unsigned char *p = buf.buf;
    const unsigned char *in = src.obj ? (const unsigned char *)src.buf : p;
    const unsigned char *c = ct.buf, *v = iv.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < buf.len / ss; s++) {
        unsigned char *q = p + s * ss;
        const unsigned char *r = in + s * ss, *cs = c + s * ss;
        for (Py_ssize_t j = ss - 16; j >= 0; j -= 16) {
            const unsigned char *prev = j ? cs + j - 16 : v + 16 * s;
            uint64_t a = rd64(r + j) ^ rd64(prev), b = rd64(r + j + 8) ^ rd64(prev + 8);
            wr64(q + j, a);
            wr64(q + j + 8, b);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf); PyBuffer_Release(&ct); PyBuffer_Release(&iv); PyBuffer_Release(&src);
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

/* Diffuse ``count`` sectors read from ``buf`` and written to ``out`` (may be ``buf``), in
 * portable C; ``keys`` (32 bytes per sector, may be NULL) is the sector key, XORed in before
 * encrypting or after decrypting. Decrypting with ``ct`` (the ciphertext) and ``ivs`` (16
 * bytes per sector), ``buf`` holds the sectors' AES-ECB decryption and the CBC chaining XOR
 * is done as the words are loaded: CBC, diffusers and sector key in one pass per sector. */
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

/* Decryption (CBC chaining, diffusers B then A, sector key) of ``count`` sectors; ``ct`` and
 * ``ivs`` NULL: the diffusers and sector key only; returns how many sectors it did (from
 * the first). One of the functions below. */
typedef Py_ssize_t (*undiffuse_fn)(const unsigned char *buf, unsigned char *out, Py_ssize_t count,
                             Py_ssize_t ss, const unsigned char *keys,
                             const unsigned char *ct, const unsigned char *ivs);

static Py_ssize_t undiffuse_portable(const unsigned char *buf, unsigned char *out,
                                     Py_ssize_t count, Py_ssize_t ss, const unsigned char *keys,
                                     const unsigned char *ct, const unsigned char *ivs) {
    diffuse_cbc(buf, out, count, ss, 1, keys, ct, ivs);
    return count;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* Hand-vectorised decryption for x86-64 CPUs with AVX2 or AVX-512, picked at load.
 *
 * A group of sectors (8 with AVX2, 16 with AVX-512) is transposed so that vector d[i] holds
 * word i of every sector, one sector per lane: a sector's own steps depend on each other,
 * different sectors do not. The transposes are register shuffles over 8x8 / 16x16 blocks of
 * words; the CBC chaining XOR is done on the block before its transpose and the sector key
 * XOR after the transpose back. The diffusers carry the rows a step needs in registers
 * (see undiffuse_rows) so each row is loaded and stored once per cycle of a diffuser. */
#include <immintrin.h>
#define X86_SIMD 1

typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
#define ROL(x, r) (((x) << (r)) | ((x) >> (32 - (r))))

/* Undo diffuser B (3 cycles) then A (5 cycles) on the rows d[0..n) of type V, n a multiple
 * of 4 and at least 16. B: d[i] += d[i+2] ^ rotl(d[i+5], 0/10/0/25) reads rows not yet
 * updated in its cycle except where i+2, i+5 wrap past n to rows 0..4 (already updated):
 * o0..o8 are rows i..i+8 as the sequential loop sees them. A: d[i] += d[i-2] ^ rotl(d[i-5],
 * 9/0/13/0) reads rows just updated; m1..m5 are rows i-1..i-5, starting with the old rows
 * n-1..n-5 (which the sequential loop also reads before updating them). */
#define DEFINE_UNDIFFUSE_ROWS(NAME, V, TARGET)                                           \
    TARGET static NOT_INLINED void NAME(V *d, Py_ssize_t n) {                            \
        for (int c = 0; c < 3; c++) {                                                    \
            V o0 = d[0], o1 = d[1], o2 = d[2], o3 = d[3], o4 = d[4];                     \
            V o5 = d[5], o6 = d[6], o7 = d[7], o8 = d[8];                                \
            for (Py_ssize_t i = 0; i < n; i += 4) {                                      \
                V x0 = o0 + (o2 ^ o5), x1 = o1 + (o3 ^ ROL(o6, 10));                     \
                V x2 = o2 + (o4 ^ o7), x3 = o3 + (o5 ^ ROL(o8, 25));                     \
                d[i] = x0; d[i + 1] = x1; d[i + 2] = x2; d[i + 3] = x3;                  \
                o0 = o4; o1 = o5; o2 = o6; o3 = o7; o4 = o8;                             \
                if (i + 12 < n) {                                                        \
                    o5 = d[i + 9]; o6 = d[i + 10]; o7 = d[i + 11]; o8 = d[i + 12];       \
                } else {                                                                 \
                    o5 = d[wrap(i + 9, n)]; o6 = d[wrap(i + 10, n)];                     \
                    o7 = d[wrap(i + 11, n)]; o8 = d[wrap(i + 12, n)];                    \
                }                                                                        \
            }                                                                            \
        }                                                                                \
        for (int c = 0; c < 5; c++) {                                                    \
            V m5 = d[n - 5], m4 = d[n - 4], m3 = d[n - 3], m2 = d[n - 2], m1 = d[n - 1]; \
            for (Py_ssize_t i = 0; i < n; i += 4) {                                      \
                V x0 = d[i] + (m2 ^ ROL(m5, 9)), x1 = d[i + 1] + (m1 ^ m4);              \
                V x2 = d[i + 2] + (x0 ^ ROL(m3, 13)), x3 = d[i + 3] + (x1 ^ m2);         \
                d[i] = x0; d[i + 1] = x1; d[i + 2] = x2; d[i + 3] = x3;                  \
                m5 = m1; m4 = x0; m3 = x1; m2 = x2; m1 = x3;                             \
            }                                                                            \
        }                                                                                \
    }
/* Not inlined nor specialised: ``d`` is a thread-local array whose address the compiler
 * would otherwise look up again (a call) inside the loops. */
#if defined(__GNUC__) && !defined(__clang__)
#define NOT_INLINED __attribute__((noinline, noipa))
#else
#define NOT_INLINED __attribute__((noinline))
#endif
DEFINE_UNDIFFUSE_ROWS(undiffuse_rows8, u32x8, __attribute__((target("avx2"))))
DEFINE_UNDIFFUSE_ROWS(undiffuse_rows16, u32x16, __attribute__((target("avx512f"))))

/* r[k] = old column k of the 8x8 words r[0..8) (rows in, rows of the transpose out) */
__attribute__((target("avx2"))) static inline void transpose8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {  /* u[4k+m], 128-bit lane j: column 4j+m of rows 4k..4k+3 */
        u[4 * k] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    for (int m = 0; m < 4; m++) {
        r[m] = _mm256_permute2x128_si256(u[m], u[4 + m], 0x20);
        r[4 + m] = _mm256_permute2x128_si256(u[m], u[4 + m], 0x31);
    }
}

/* r[k] = old column k of the 16x16 words r[0..16) */
__attribute__((target("avx512f"))) static inline void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {  /* u[4k+m], 128-bit lane j: column 4j+m of rows 4k..4k+3 */
        u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    for (int m = 0; m < 4; m++) {  /* gather lane j of u[m], u[4+m], u[8+m], u[12+m] */
        __m512i v0 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x88);
        __m512i v1 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xDD);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x88);
        __m512i v3 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xDD);
        r[m] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[4 + m] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[8 + m] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        r[12 + m] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
}

/* Each SIMD path decrypts whole groups of sectors (8 or 16) and returns how many it did;
 * the rest go to the next narrower path. */
__attribute__((target("avx2")))
static Py_ssize_t undiffuse_avx2(const unsigned char *buf, unsigned char *out, Py_ssize_t count,
                                 Py_ssize_t ss, const unsigned char *keys,
                                 const unsigned char *ct, const unsigned char *ivs) {
    static __thread u32x8 d[1024];
    Py_ssize_t n = ss / 4, s0;
    for (s0 = 0; s0 + 8 <= count; s0 += 8) {
        for (Py_ssize_t b = 0; b < n; b += 8) {  /* words b..b+7 of the 8 sectors */
            const unsigned char *p = buf + s0 * ss + 4 * b, *c = ct + s0 * ss + 4 * b;
            __m256i r[8];
            for (int l = 0; l < 8; l++) {
                r[l] = _mm256_loadu_si256((const __m256i *)(p + l * ss));
                if (ct)   /* CBC: block j ^= ciphertext block j-1, block 0 ^= the IV */
                    r[l] = _mm256_xor_si256(r[l], b ? _mm256_loadu_si256((const __m256i *)(c + l * ss - 16))
                        : _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(c + l * ss)),
                                           _mm_loadu_si128((const __m128i *)(ivs + 16 * (s0 + l)))));
            }
            transpose8(r);
            for (int k = 0; k < 8; k++) memcpy(&d[b + k], &r[k], 32);
        }
        undiffuse_rows8(d, n);
        for (Py_ssize_t b = 0; b < n; b += 8) {
            unsigned char *q = out + s0 * ss + 4 * b;
            __m256i r[8];
            for (int k = 0; k < 8; k++) memcpy(&r[k], &d[b + k], 32);
            transpose8(r);
            for (int l = 0; l < 8; l++) {
                if (keys)
                    r[l] = _mm256_xor_si256(r[l], _mm256_loadu_si256((const __m256i *)(keys + 32 * (s0 + l))));
                _mm256_storeu_si256((__m256i *)(q + l * ss), r[l]);
            }
        }
    }
    return s0;
}

__attribute__((target("avx512f")))
static Py_ssize_t undiffuse_avx512(const unsigned char *buf, unsigned char *out, Py_ssize_t count,
                                   Py_ssize_t ss, const unsigned char *keys,
                                   const unsigned char *ct, const unsigned char *ivs) {
    static __thread u32x16 d[1024];
    Py_ssize_t n = ss / 4, s0;
    for (s0 = 0; s0 + 16 <= count; s0 += 16) {
        for (Py_ssize_t b = 0; b < n; b += 16) {  /* words b..b+15 of the 16 sectors */
            const unsigned char *p = buf + s0 * ss + 4 * b, *c = ct + s0 * ss + 4 * b;
            __m512i r[16];
            for (int l = 0; l < 16; l++) {
                r[l] = _mm512_loadu_si512(p + l * ss);
                if (ct)   /* CBC: block j ^= ciphertext block j-1, block 0 ^= the IV */
                    r[l] = _mm512_xor_si512(r[l], b ? _mm512_loadu_si512(c + l * ss - 16)
                        : _mm512_alignr_epi32(_mm512_loadu_si512(c + l * ss), _mm512_broadcast_i32x4(
                              _mm_loadu_si128((const __m128i *)(ivs + 16 * (s0 + l)))), 12));
            }
            transpose16(r);
            for (int k = 0; k < 16; k++) memcpy(&d[b + k], &r[k], 64);
        }
        undiffuse_rows16(d, n);
        for (Py_ssize_t b = 0; b < n; b += 16) {
            unsigned char *q = out + s0 * ss + 4 * b;
            __m512i r[16];
            for (int k = 0; k < 16; k++) memcpy(&r[k], &d[b + k], 64);
            transpose16(r);
            for (int l = 0; l < 16; l++) {
                if (keys)   /* the 32-byte key, twice */
                    r[l] = _mm512_xor_si512(r[l], _mm512_broadcast_i64x4(
                        _mm256_loadu_si256((const __m256i *)(keys + 32 * (s0 + l)))));
                _mm512_storeu_si512(q + l * ss, r[l]);
            }
        }
    }
    return s0;
}
#endif

/* The decryption paths this build and CPU can run, fastest first; the first is used unless
 * a caller names another (tests run each). A SIMD path takes sector sizes that are a
 * multiple of its block of words (32 / 64 bytes), and leaves the sectors past its last whole
 * group to the paths after it; the portable path, last, takes anything. */
static const struct { const char *name; undiffuse_fn fn; Py_ssize_t block; } PATHS[] = {
#ifdef X86_SIMD
    {"avx512", undiffuse_avx512, 64},
    {"avx2", undiffuse_avx2, 32},
#endif
    {"portable", undiffuse_portable, 16},
};
#define NPATHS ((int)(sizeof(PATHS) / sizeof(PATHS[0])))
static int path_ok[NPATHS];
static int best_path;

static void pick_paths(void) {
    for (int i = 0; i < NPATHS; i++) {
        path_ok[i] = 1;
#ifdef X86_SIMD
        __builtin_cpu_init();
        if (PATHS[i].fn == undiffuse_avx512) path_ok[i] = __builtin_cpu_supports("avx512f");
        if (PATHS[i].fn == undiffuse_avx2) path_ok[i] = __builtin_cpu_supports("avx2");
#endif
    }
    best_path = NPATHS - 1;
    for (int i = NPATHS - 1; i >= 0; i--)
        if (path_ok[i]) best_path = i;
}

/* The path named ``name`` (NULL: the best), or -1 with ValueError */
static int find_path(const char *name) {
    if (!name) return best_path;
    for (int i = 0; i < NPATHS; i++)
        if (path_ok[i] && !strcmp(PATHS[i].name, name)) return i;
    PyErr_Format(PyExc_ValueError, "no decryption path %s on this CPU/build", name);
    return -1;
}

/* Decrypt with ``path``, then what it left with the next usable paths */
static void undiffuse(int path, const unsigned char *buf, unsigned char *out, Py_ssize_t count,
                      Py_ssize_t ss, const unsigned char *keys, const unsigned char *ct,
                      const unsigned char *ivs) {
    for (Py_ssize_t s = 0; s < count; path++) {
        if (!path_ok[path] || ss % PATHS[path].block) continue;  /* the last path takes all */
        s += PATHS[path].fn(buf + s * ss, out + s * ss, count - s, ss, keys ? keys + 32 * s : NULL,
                            ct ? ct + s * ss : NULL, ivs ? ivs + 16 * s : NULL);
    }
}

/* elephant_decrypt/encrypt(buf, sector_size[, keys]): the diffusers, and with ``keys`` (32
 * bytes per sector) the sector key XOR too, in one pass over each sector */
static PyObject *elephant(PyObject *args, PyObject *kw, int decrypt) {
    static char *names[] = {"buf", "sector_size", "keys", "path", NULL};
    Py_buffer buf, keys = {0};
    Py_ssize_t ss;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*n|y*z", names, &buf, &ss, &keys, &name))
        return NULL;
    int path = find_path(name);
    if (path < 0 || check_sectors(buf.len, ss) < 0 || ss > 4096 ||
        (keys.buf && keys.len < buf.len / ss * 32)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "sector larger than 4096 or too few keys");
        PyBuffer_Release(&buf); if (keys.buf) PyBuffer_Release(&keys); return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (decrypt)
        undiffuse(path, buf.buf, buf.buf, buf.len / ss, ss, keys.buf, NULL, NULL);
    else
        diffuse_cbc(buf.buf, buf.buf, buf.len / ss, ss, 0, keys.buf, NULL, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (keys.buf) PyBuffer_Release(&keys);
    Py_RETURN_NONE;
}
static PyObject *elephant_decrypt(PyObject *self, PyObject *args, PyObject *kw) {
    return elephant(args, kw, 1);
}
static PyObject *elephant_encrypt(PyObject *self, PyObject *args, PyObject *kw) {
    return elephant(args, kw, 0);
}

/* cbc_elephant_decrypt(out, ecb, ciphertext, ivs, keys, sector_size, path=None): whole
 * sectors of AES-CBC + Elephant decrypted into ``out`` from ``ecb`` (their AES-ECB
 * decryption): the CBC chaining, both diffusers and the sector key XOR in one pass.
 * ``out`` may be ``ecb`` or ``ciphertext``. ``path`` names one of paths() (tests). */
static PyObject *cbc_elephant_decrypt(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"out", "ecb", "ciphertext", "ivs", "keys", "sector_size", "path", NULL};
    Py_buffer out, ecb, ct, iv, keys;
    Py_ssize_t ss;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*y*y*y*y*n|z", names, &out, &ecb, &ct, &iv,
                                     &keys, &ss, &name))
        return NULL;
    Py_ssize_t count = ss > 0 ? ecb.len / ss : 0;
    PyObject *res = NULL;
    int path = find_path(name);
    if (path < 0 || check_sectors(ecb.len, ss) < 0)
        goto done;
    if (ss > 4096 || out.len < ecb.len || ct.len < ecb.len || iv.len < count * 16 ||
        keys.len < count * 32) {
        PyErr_SetString(PyExc_ValueError, "sector larger than 4096, or short output, "
                        "ciphertext, IVs or keys");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    undiffuse(path, ecb.buf, out.buf, count, ss, keys.buf, ct.buf, iv.buf);
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

/* AES-ECB decryption (FIPS-197) with the CPU's AES instructions, the GIL released: OpenSSL's
 * (through `cryptography`) holds the GIL for the whole call, so the read-ahead worker's AES
 * stopped every other thread (measured: two threads of update_into ran no faster than one).
 * Two paths: VAES on 512-bit vectors (4 blocks an instruction, 16 in flight) and AES-NI (8
 * blocks in flight); none on other CPUs (the caller keeps `cryptography`). The round keys
 * are expanded on every call (some 50 ns: a call is a 256 KiB slice). */
#ifdef X86_SIMD
__attribute__((target("aes,sse2")))
static __m128i key_step(__m128i k, __m128i t) {   /* t: the keygenassist word, broadcast */
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    return _mm_xor_si128(k, t);
}
#define KEY_A(prev2, prev1, rcon) key_step(prev2, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(prev1, rcon), 0xff))
#define KEY_B(prev2, prev1) key_step(prev2, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(prev1, 0), 0xaa))

/* The encryption round keys of a 16- or 32-byte key into rk[0..nr]; returns nr (10 or 14). */
__attribute__((target("aes,sse2")))
static int aes_enc_keys(const unsigned char *key, Py_ssize_t klen, __m128i *rk) {
    int nr;
    rk[0] = _mm_loadu_si128((const __m128i *)key);
    if (klen == 16) {
        nr = 10;
        rk[1] = KEY_A(rk[0], rk[0], 0x01); rk[2] = KEY_A(rk[1], rk[1], 0x02);
        rk[3] = KEY_A(rk[2], rk[2], 0x04); rk[4] = KEY_A(rk[3], rk[3], 0x08);
        rk[5] = KEY_A(rk[4], rk[4], 0x10); rk[6] = KEY_A(rk[5], rk[5], 0x20);
        rk[7] = KEY_A(rk[6], rk[6], 0x40); rk[8] = KEY_A(rk[7], rk[7], 0x80);
        rk[9] = KEY_A(rk[8], rk[8], 0x1b); rk[10] = KEY_A(rk[9], rk[9], 0x36);
    } else {
        nr = 14;
        rk[1] = _mm_loadu_si128((const __m128i *)(key + 16));
        rk[2] = KEY_A(rk[0], rk[1], 0x01); rk[3] = KEY_B(rk[1], rk[2]);
        rk[4] = KEY_A(rk[2], rk[3], 0x02); rk[5] = KEY_B(rk[3], rk[4]);
        rk[6] = KEY_A(rk[4], rk[5], 0x04); rk[7] = KEY_B(rk[5], rk[6]);
        rk[8] = KEY_A(rk[6], rk[7], 0x08); rk[9] = KEY_B(rk[7], rk[8]);
        rk[10] = KEY_A(rk[8], rk[9], 0x10); rk[11] = KEY_B(rk[9], rk[10]);
        rk[12] = KEY_A(rk[10], rk[11], 0x20); rk[13] = KEY_B(rk[11], rk[12]);
        rk[14] = KEY_A(rk[12], rk[13], 0x40);
    }
    return nr;
}

/* The decryption round keys (the equivalent inverse cipher's) of a 16- or 32-byte key into
 * dk[0..nr]; returns nr. */
__attribute__((target("aes,sse2")))
static int aes_dec_keys(const unsigned char *key, Py_ssize_t klen, __m128i *dk) {
    __m128i rk[15];
    int nr = aes_enc_keys(key, klen, rk);
    dk[0] = rk[nr];
    for (int i = 1; i < nr; i++) dk[i] = _mm_aesimc_si128(rk[nr - i]);
    dk[nr] = rk[0];
    return nr;
}

__attribute__((target("aes,sse2")))
static void ecb_aesni(const __m128i *dk, int nr, const unsigned char *in, unsigned char *out,
                      Py_ssize_t blocks) {
    Py_ssize_t i = 0;
    for (; i + 8 <= blocks; i += 8) {
        __m128i b[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            b[j] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + 16 * (i + j))), dk[0]);
        for (int r = 1; r < nr; r++) {
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) b[j] = _mm_aesdec_si128(b[j], dk[r]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            _mm_storeu_si128((__m128i *)(out + 16 * (i + j)), _mm_aesdeclast_si128(b[j], dk[nr]));
    }
    for (; i < blocks; i++) {
        __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + 16 * i)), dk[0]);
        for (int r = 1; r < nr; r++) b = _mm_aesdec_si128(b, dk[r]);
        _mm_storeu_si128((__m128i *)(out + 16 * i), _mm_aesdeclast_si128(b, dk[nr]));
    }
}

/* AES-ECB encryption with AES-NI, 8 blocks in flight (``rk`` from aes_enc_keys): only for
 * Elephant's IVs and sector keys, 3 blocks a sector, so no VAES path. */
__attribute__((target("aes,sse2")))
static void ecb_enc_aesni(const __m128i *rk, int nr, const unsigned char *in, unsigned char *out,
                          Py_ssize_t blocks) {
    Py_ssize_t i = 0;
    for (; i + 8 <= blocks; i += 8) {
        __m128i b[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            b[j] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + 16 * (i + j))), rk[0]);
        for (int r = 1; r < nr; r++) {
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) b[j] = _mm_aesenc_si128(b[j], rk[r]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            _mm_storeu_si128((__m128i *)(out + 16 * (i + j)), _mm_aesenclast_si128(b[j], rk[nr]));
    }
    for (; i < blocks; i++) {
        __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + 16 * i)), rk[0]);
        for (int r = 1; r < nr; r++) b = _mm_aesenc_si128(b, rk[r]);
        _mm_storeu_si128((__m128i *)(out + 16 * i), _mm_aesenclast_si128(b, rk[nr]));
    }
}

__attribute__((target("vaes,avx512f,aes,sse2")))
static void ecb_vaes(const __m128i *dk, int nr, const unsigned char *in, unsigned char *out,
                     Py_ssize_t blocks) {
    __m512i k[15];
    for (int r = 0; r <= nr; r++) k[r] = _mm512_broadcast_i32x4(dk[r]);
    Py_ssize_t i = 0;
    for (; i + 16 <= blocks; i += 16) {
        __m512i b[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            b[j] = _mm512_xor_si512(_mm512_loadu_si512(in + 16 * i + 64 * j), k[0]);
        for (int r = 1; r < nr; r++) {
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) b[j] = _mm512_aesdec_epi128(b[j], k[r]);
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            _mm512_storeu_si512(out + 16 * i + 64 * j, _mm512_aesdeclast_epi128(b[j], k[nr]));
    }
    ecb_aesni(dk, nr, in + 16 * i, out + 16 * i, blocks - i);   /* the last < 16 blocks */
}

typedef void (*ecb_fn)(const __m128i *, int, const unsigned char *, unsigned char *, Py_ssize_t);
static const struct { const char *name; ecb_fn fn; } AES_PATHS[] = {
    {"vaes", ecb_vaes}, {"aesni", ecb_aesni}};
#define NAES 2
#else
#define NAES 0
#endif
#ifdef X86_SIMD
static int aes_ok[NAES];
#endif

static void pick_aes(void) {
#ifdef X86_SIMD
    __builtin_cpu_init();
    aes_ok[1] = __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse2");
    aes_ok[0] = aes_ok[1] && __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx512f");
#endif
}

/* The AES path named ``name`` (NULL: the best), or -1 with ValueError */
static int find_aes(const char *name) {
#ifdef X86_SIMD
    for (int i = 0; i < NAES; i++)
        if (aes_ok[i] && (!name || !strcmp(name, AES_PATHS[i].name))) return i;
#endif
    PyErr_Format(PyExc_ValueError, "no AES path %s on this CPU/build", name ? name : "at all");
    return -1;
}

#ifdef X86_SIMD
/* AES-CBC + Elephant decryption of ``count`` sectors of ciphertext ``ct``, the first at byte
 * ``offset`` of the volume, into ``out`` (may be ``ct``), GROUP sectors at a time so that a
 * group's ECB output (8 KiB of 512-byte sectors) is still in L1 when the diffusers read it:
 * the group's IVs (AES of each sector's offset under the data key ``ek``) and sector keys
 * (AES of the offset and of the offset with byte 15 = 0x80 under the tweak key ``tk``), its
 * AES-ECB decryption (``aes``, round keys ``dk``), then the CBC chaining, both diffusers and
 * the sector key in one pass (``undiffuse`` with ``path``). A group's ciphertext is all read
 * before any of its output is written. */
#define GROUP 16
static void cbc_elephant_groups(int path, int aes, const __m128i *dk, const __m128i *ek,
                                const __m128i *tk, int nr, const unsigned char *ct,
                                unsigned char *out, Py_ssize_t count, Py_ssize_t ss,
                                uint64_t offset) {
    static __thread unsigned char ecb[GROUP * 4096] __attribute__((aligned(64)));
    unsigned char pt[GROUP * 32], ivs[GROUP * 16], keys[GROUP * 32];
    for (Py_ssize_t s0 = 0; s0 < count; s0 += GROUP) {
        Py_ssize_t g = count - s0 < GROUP ? count - s0 : GROUP;
        const unsigned char *c = ct + s0 * ss;
        for (Py_ssize_t l = 0; l < g; l++) {
            uint64_t v = offset + (uint64_t)(s0 + l) * (uint64_t)ss;
            wr64(pt + 16 * l, v); wr64(pt + 16 * l + 8, 0);
        }
        ecb_enc_aesni(ek, nr, pt, ivs, g);
        for (Py_ssize_t l = 0; l < g; l++) {
            uint64_t v = offset + (uint64_t)(s0 + l) * (uint64_t)ss;
            wr64(pt + 32 * l, v); wr64(pt + 32 * l + 8, 0);
            wr64(pt + 32 * l + 16, v); wr64(pt + 32 * l + 24, (uint64_t)1 << 63);
        }
        ecb_enc_aesni(tk, nr, pt, keys, 2 * g);
        AES_PATHS[aes].fn(dk, nr, c, ecb, g * ss / 16);
        undiffuse(path, ecb, out + s0 * ss, g, ss, keys, c, ivs);
    }
}
#endif

/* cbc_elephant_sectors(out, data, offset, key, tweak_key, sector_size, path=None, aes=None):
 * whole sectors of AES-CBC + Elephant ciphertext ``data``, the first at byte ``offset`` of
 * the volume, decrypted into ``out`` (may be ``data``) under the FVEK's 16- or 32-byte
 * ``key`` and ``tweak_key``: IVs, sector keys, AES, CBC chaining, diffusers and sector key
 * XOR, 16 sectors at a time, the GIL released. ``path`` names one of paths(), ``aes`` one
 * of aes_paths() (tests). ValueError when this CPU has no AES instructions (the caller then
 * uses cryptography and cbc_elephant_decrypt). */
static PyObject *cbc_elephant_sectors(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"out", "data", "offset", "key", "tweak_key", "sector_size", "path",
                            "aes", NULL};
    Py_buffer out, data, key, tweak;
    unsigned long long offset;
    Py_ssize_t ss;
    const char *name = NULL, *aes_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*y*Ky*y*n|zz", names, &out, &data, &offset,
                                     &key, &tweak, &ss, &name, &aes_name))
        return NULL;
    PyObject *res = NULL;
    int path = find_path(name), aes = path < 0 ? -1 : find_aes(aes_name);
    if (aes < 0 || check_sectors(data.len, ss) < 0)
        goto done;
    if (ss > 4096 || out.len < data.len || (key.len != 16 && key.len != 32) ||
        tweak.len != key.len) {
        PyErr_SetString(PyExc_ValueError, "sector larger than 4096, short output, or keys "
                        "not both 16 or both 32 bytes");
        goto done;
    }
#ifdef X86_SIMD
    {
        __m128i dk[15], ek[15], tk[15];
        int nr = aes_dec_keys(key.buf, key.len, dk);
        aes_enc_keys(key.buf, key.len, ek);
        aes_enc_keys(tweak.buf, tweak.len, tk);
        Py_BEGIN_ALLOW_THREADS
        cbc_elephant_groups(path, aes, dk, ek, tk, nr, data.buf, out.buf, data.len / ss, ss, offset);
        Py_END_ALLOW_THREADS
    }
#endif
    res = Py_None;
    Py_INCREF(res);
done:
    PyBuffer_Release(&out); PyBuffer_Release(&data); PyBuffer_Release(&key);
    PyBuffer_Release(&tweak);
    return res;
}

/* ecb_decrypt(out, data, key, path=None): AES-ECB decryption of ``data`` (whole 16-byte
 * blocks; ``out`` may be ``data``) under a 16- or 32-byte ``key`` into ``out``. ValueError
 * when this CPU has no AES instructions (aes_paths() is then empty). */
static PyObject *ecb_decrypt(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"out", "data", "key", "path", NULL};
    Py_buffer out, data, key;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*y*y*|z", names, &out, &data, &key, &name))
        return NULL;
    PyObject *res = NULL;
    int path = find_aes(name);
    if (path < 0)
        goto done;
    if (data.len % 16 || out.len < data.len || (key.len != 16 && key.len != 32)) {
        PyErr_SetString(PyExc_ValueError, "data not whole blocks, short output, or a key "
                        "neither 16 nor 32 bytes");
        goto done;
    }
#ifdef X86_SIMD
    {
        __m128i dk[15];
        int nr = aes_dec_keys(key.buf, key.len, dk);
        Py_BEGIN_ALLOW_THREADS
        AES_PATHS[path].fn(dk, nr, data.buf, out.buf, data.len / 16);
        Py_END_ALLOW_THREADS
    }
#endif
    res = Py_None;
    Py_INCREF(res);
done:
    PyBuffer_Release(&out); PyBuffer_Release(&data); PyBuffer_Release(&key);
    return res;
}

/* aes_paths() -> the AES-ECB decryption paths usable here, the one used by default first */
static PyObject *aes_paths(PyObject *self, PyObject *unused) {
    PyObject *res = PyList_New(0);
#ifdef X86_SIMD
    for (int i = 0; res && i < NAES; i++) {
        if (!aes_ok[i]) continue;
        PyObject *s = PyUnicode_FromString(AES_PATHS[i].name);
        if (!s || PyList_Append(res, s) < 0) Py_CLEAR(res);
        Py_XDECREF(s);
    }
#endif
    return res;
}

/* blank(n) -> a bytearray of n bytes left as malloc gave them: a buffer that is written
 * whole at once (a decrypted block) need not be zero-filled first as bytearray(n) is. */
static PyObject *blank(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n)) return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, n);
}

/* paths() -> names of the decryption paths usable here, the one used by default first */
static PyObject *paths(PyObject *self, PyObject *unused) {
    PyObject *res = PyList_New(0);
    for (int i = -1; res && i < NPATHS; i++) {
        int j = i < 0 ? best_path : i;
        if ((i < 0 || (path_ok[j] && j != best_path))) {
            PyObject *s = PyUnicode_FromString(PATHS[j].name);
            if (!s || PyList_Append(res, s) < 0) Py_CLEAR(res);
            Py_XDECREF(s);
        }
    }
    return res;
}

static PyMethodDef methods[] = {
    {"counters", counters, METH_VARARGS, "128-bit little-endian counters (tweaks, IVs)"},
    {"xts_xor", xts_xor, METH_VARARGS, "XOR with the XTS tweak sequence of each sector"},
    {"cbc_xor", cbc_xor, METH_VARARGS, "CBC chaining XOR after an ECB decryption"},
    {"elephant_decrypt", (PyCFunction)(void (*)(void))elephant_decrypt, METH_VARARGS | METH_KEYWORDS,
     "undo the Elephant diffusers B, A"},
    {"elephant_encrypt", (PyCFunction)(void (*)(void))elephant_encrypt, METH_VARARGS | METH_KEYWORDS,
     "apply the Elephant diffusers A, B"},
    {"cbc_elephant_decrypt", (PyCFunction)(void (*)(void))cbc_elephant_decrypt,
     METH_VARARGS | METH_KEYWORDS,
     "CBC chaining, Elephant diffusers and sector keys in one pass, into a buffer"},
    {"cbc_elephant_sectors", (PyCFunction)(void (*)(void))cbc_elephant_sectors,
     METH_VARARGS | METH_KEYWORDS,
     "AES-CBC + Elephant sectors decrypted from their ciphertext, 16 at a time, in C"},
    {"blank", blank, METH_VARARGS, "a bytearray of n bytes, not zero-filled"},
    {"ecb_decrypt", (PyCFunction)(void (*)(void))ecb_decrypt, METH_VARARGS | METH_KEYWORDS,
     "AES-ECB decryption with the CPU's AES instructions, the GIL released"},
    {"aes_paths", aes_paths, METH_NOARGS, "the AES-ECB paths usable here, default first"},
    {"paths", paths, METH_NOARGS, "the Elephant decryption paths usable here, default first"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fvecrypt", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fvecrypt(void) {
    pick_paths();
    pick_aes();
    return PyModule_Create(&module);
}
