/*
 * LZNT1 decompression of one NTFS compression unit, in C because the NTFS layer must read
 * compressed files at 50+ MB/s end to end and a Python loop over tokens manages ~20.
 *
 * Written from the format description ([MS-XCA] 2.5 "LZNT1", and the NTFS compression
 * notes of the Linux-NTFS project): a unit is a run of chunks, each with a 16-bit header
 * (bit 15 = compressed, bits 12..14 = signature 3, bits 0..11 = bytes after it - 1; a
 * header of 0 ends the unit). A compressed chunk is groups of one flag byte and eight tokens: a clear
 * bit is a literal byte, a set bit a 16-bit back-reference whose split between offset and
 * length depends on how much of the chunk has been produced so far. Every chunk stands for
 * 4096 bytes of output: a short chunk followed by another one is zero-filled to 4096.
 *
 * The semantics, error messages and error offsets must match the pure-Python fallback in
 * lznt1.py byte for byte (the tests check that on random input).
 *
 * Python API: decompress(data, unit_size) -> bytes; raises Error(message, offset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define CHUNK 4096

static PyObject *LzError;

struct lz_error {
    const char *msg;
    Py_ssize_t offset;
};

/* Number of offset bits above the minimum 4 for a back-reference made after `pos` bytes. */
static inline unsigned
extra_offset_bits(size_t pos)
{
    size_t x = pos - 1;
    if (x < 16)
        return 0;
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)(32 - __builtin_clz((unsigned)x)) - 4;
#else
    unsigned n = 0;
    for (; x >= 16; x >>= 1)
        n++;
    return n;
#endif
}

/* How many literals open a flag group's remaining `tag` bits (8 if none is a reference). */
static inline Py_ssize_t
literal_run(unsigned tag)
{
    if (tag == 0)
        return 8;
#if defined(__GNUC__) || defined(__clang__)
    return (Py_ssize_t)__builtin_ctz(tag);
#else
    Py_ssize_t n = 0;
    for (; !(tag & 1); tag >>= 1)
        n++;
    return n;
#endif
}

/* Copy `len` bytes from `off` bytes back; the source may overlap the destination. */
static inline void
copy_match(uint8_t *out, size_t off, size_t len)
{
    const uint8_t *from = out - off;
    if (off >= len) {
        memcpy(out, from, len);
    } else if (off == 1) {
        memset(out, from[0], len);
    } else {
        /* The bytes between `from` and the write point repeat with period `off`; copying
         * from `from` doubles the repeated span each round without overlapping. */
        size_t done = 0;
        while (done < len) {
            size_t n = off + done;
            if (n > len - done)
                n = len - done;
            memcpy(out + done, from, n);
            done += n;
        }
    }
}

/*
 * Decode `src` into `dst` (capacity `cap` >= 0, the output limit). Returns the number of
 * bytes produced (a short last chunk is not padded), or -1 with `err` set.
 */
static Py_ssize_t
lznt1_decode(const uint8_t *src, Py_ssize_t src_len, uint8_t *dst, Py_ssize_t cap,
             struct lz_error *err)
{
    Py_ssize_t sp = 0;    /* next chunk header in src */
    Py_ssize_t base = 0;  /* where the next chunk's output starts in dst */
    Py_ssize_t end = 0;   /* bytes produced so far (dst[end:base] still to zero-fill) */
    const uint8_t *dst_end = dst + cap;
    const uint8_t *src_end = src + src_len;

#define FAIL(m, o) do { err->msg = (m); err->offset = (o); return -1; } while (0)

    while (base < cap) {
        unsigned hdr;
        if (src_len - sp < 2) {
            if (sp >= src_len || src[sp] == 0)
                break;
            FAIL("chunk header truncated by the end of data", sp);
        }
        hdr = (unsigned)src[sp] | ((unsigned)src[sp + 1] << 8);
        if (hdr == 0)
            break;
        if ((hdr & 0x7000) != 0x3000)
            FAIL("bad chunk signature", sp);
        Py_ssize_t size = (Py_ssize_t)(hdr & 0x0FFF) + 1;
        Py_ssize_t hdr_off = sp;
        sp += 2;
        if (size > src_len - sp)
            FAIL("chunk size past the end of data", hdr_off);

        if (end < base)
            memset(dst + end, 0, (size_t)(base - end));
        const uint8_t *in = src + sp;
        const uint8_t *in_end = in + size;
        uint8_t *start = dst + base;
        uint8_t *out = start;
        /* Output limit for this chunk: 4096 bytes, or less where the unit ends. */
        Py_ssize_t room = cap - base < CHUNK ? cap - base : CHUNK;
        uint8_t *out_end = start + room;
        int clipped = 0;  /* the unit ended inside this chunk: stop after it */

        if (!(hdr & 0x8000)) {
            Py_ssize_t n = size;
            if (n > room) {
                n = room;
                clipped = 1;
            }
            memcpy(out, in, (size_t)n);
            out += n;
        } else {
            while (in < in_end) {
                unsigned tag = *in++;
                if (tag == 0 && in_end - in >= 8 && out_end - out >= 8) {
                    memcpy(out, in, 8);  /* eight literals: the common case in text */
                    out += 8;
                    in += 8;
                    continue;
                }
                for (int left = 8; left > 0 && in < in_end; ) {
                    if (!(tag & 1)) {
                        /* A run of literals: as many as the tag's low zero bits say. */
                        Py_ssize_t run = literal_run(tag);
                        if (run > left)
                            run = left;
                        if (run > in_end - in)
                            run = in_end - in;
                        if (run > out_end - out) {
                            Py_ssize_t fit = out_end - out;
                            memcpy(out, in, (size_t)fit);
                            out += fit;
                            in += fit;
                            if (room < CHUNK) {
                                clipped = 1;
                                goto chunk_done;
                            }
                            FAIL("literal past 4096 bytes of chunk output", in - src);
                        }
                        if (src_end - in >= 8 && dst_end - out >= 8)
                            memcpy(out, in, 8);  /* fixed size: one move; extra bytes are
                                                    overwritten like those of a match */
                        else
                            memcpy(out, in, (size_t)run);
                        out += run;
                        in += run;
                        tag >>= run;
                        left -= (int)run;
                        continue;
                    }
                    tag >>= 1;
                    left--;
                    if (in_end - in < 2)
                        FAIL("back-reference truncated by the end of the chunk", in - src);
                    unsigned tok = (unsigned)in[0] | ((unsigned)in[1] << 8);
                    size_t pos = (size_t)(out - start);
                    if (pos == 0)
                        FAIL("back-reference before the start of the chunk", in - src);
                    unsigned lg = extra_offset_bits(pos);
                    size_t off = (size_t)(tok >> (12 - lg)) + 1;
                    size_t len = (size_t)(tok & (0x0FFFu >> lg)) + 3;
                    if (off > pos)
                        FAIL("back-reference before the start of the chunk", in - src);
                    if (len > (size_t)(out_end - out)) {
                        if (room < CHUNK && pos + len <= CHUNK) {
                            copy_match(out, off, (size_t)(out_end - out));
                            out = out_end;
                            clipped = 1;
                            goto chunk_done;
                        }
                        FAIL("back-reference past 4096 bytes of chunk output", in - src);
                    }
                    if (off >= 8 && (size_t)(dst_end - out) >= len + 8) {
                        /* Eight bytes at a time; each read lies in bytes already written.
                         * May write up to 7 bytes past the match, inside the buffer: later
                         * output or the zero fill overwrites them. */
                        const uint8_t *from = out - off;
                        for (size_t k = 0; k < len; k += 8)
                            memcpy(out + k, from + k, 8);
                    } else {
                        copy_match(out, off, len);
                    }
                    out += len;
                    in += 2;
                }
            }
        }
    chunk_done:
        end = base + (out - start);
        if (clipped)
            break;
        sp += size;
        base += CHUNK;
    }
#undef FAIL
    return end;
}

static PyObject *
py_decompress(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t unit_size;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n:decompress", &buf, &unit_size))
        return NULL;
    if (unit_size < 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "unit_size must not be negative");
        return NULL;
    }
    /* Never allocate more than the input could produce: each chunk takes >= 3 bytes. */
    Py_ssize_t chunks = buf.len / 3 + 1;
    Py_ssize_t cap = unit_size;
    if (chunks < PY_SSIZE_T_MAX / CHUNK && chunks * CHUNK < cap)
        cap = chunks * CHUNK;
    PyObject *out = PyBytes_FromStringAndSize(NULL, cap);
    if (out == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    struct lz_error err = {NULL, 0};
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = lznt1_decode((const uint8_t *)buf.buf, buf.len, (uint8_t *)PyBytes_AS_STRING(out),
                     cap, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (n < 0) {
        Py_DECREF(out);
        PyObject *exc = Py_BuildValue("(sn)", err.msg, err.offset);
        if (exc != NULL) {
            PyErr_SetObject(LzError, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (n != cap && _PyBytes_Resize(&out, n) < 0)
        return NULL;
    return out;
}

static PyMethodDef methods[] = {
    {"decompress", py_decompress, METH_VARARGS,
     "decompress(data, unit_size) -> bytes: one LZNT1 compression unit; raises Error(message, offset)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_lznt1",
    .m_doc = "Native LZNT1 decoder (see ntfs_reader/lznt1.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__lznt1(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    LzError = PyErr_NewException("ntfs_reader._lznt1.Error", PyExc_ValueError, NULL);
    if (LzError == NULL || PyModule_AddObjectRef(m, "Error", LzError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
