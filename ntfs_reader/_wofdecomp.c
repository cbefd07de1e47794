/*
 * XPRESS Huffman and LZX decoding of one WOF (CompactOS) chunk, in C because the Python
 * decoders in xpress.py and lzx.py manage 4-17 MB/s and Windows keeps much of System32 in
 * these formats.
 *
 * Written from the format descriptions: [MS-XCA] 2.1-2.2 (LZ77+Huffman, "XPRESS Huffman",
 * used by XPRESS4K/8K/16K: 256 bytes of 4-bit code lengths for 512 symbols, then 16-bit
 * little-endian words read most significant bit first, match lengths extended by whole
 * bytes in the byte stream) and the LZX format ([MS-PATCH]) in its WIM/WOF variant (one
 * independent chunk of <= 32 KiB, 30 offset slots, E8 translation with file size
 * 12000000 and no reset intervals).
 *
 * Each decoder is a twin of its Python one: same bytes out, same error message, same
 * structure and same offset on corrupt input (the tests check that on random input), so
 * the bit readers deliberately follow the Python ones step for step (how many bits each
 * step asks for decides where "input ran out" is noticed).
 *
 * Python API: xpress(data, size) -> bytes, lzx(data, size) -> bytes; both raise
 * Error(message, structure, offset_or_None). Output is allocated once at `size` (<= 64 KiB
 * resp. 32 KiB) and never grows; the GIL is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PyObject *WofError;

struct wof_error {
    char msg[128];
    const char *structure;
    Py_ssize_t offset;  /* -1: none */
};

#define FAIL_AT(e, s, o, ...) do { \
        snprintf((e)->msg, sizeof (e)->msg, __VA_ARGS__); \
        (e)->structure = (s); (e)->offset = (o); return -1; } while (0)

/* Copy `len` bytes from `off` (> 0) bytes back; the source may overlap the destination. */
static inline void
copy_match(uint8_t *out, size_t off, size_t len)
{
    const uint8_t *from = out - off;
    if (off >= len) {
        memcpy(out, from, len);
    } else if (off == 1) {
        memset(out, from[0], len);
    } else {
        /* period `off`: copying from `from` doubles the repeated span each round */
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
 * Canonical Huffman decoding table for codes of at most `bits` bits, in two levels so that
 * building it costs little next to decoding a 4 KiB chunk: a primary table indexed by the
 * first min(bits, PRIMARY_BITS) bits, whose entries for longer codes point (SUB_FLAG |
 * index) to a sub-table indexed by the remaining bits. An entry is symbol << shift |
 * length; 0 means no code starts there (lengths are >= 1). Looking up the `bits`-bit window
 * gives the same answer as one flat table of 2**bits entries would (as the Python twins
 * use), invalid prefixes included.
 *
 * Codes are assigned in (length, symbol) order, so the entries they fill are a prefix of the
 * primary table (and of each sub-table): only the rest is cleared. `table` holds at least
 * TABLE_CAP(bits) entries. Returns the primary width, or -1 if the lengths are
 * oversubscribed.
 */
#define PRIMARY_BITS 10
#define SUB_FLAG 0x80000000u
#define TABLE_CAP(bits) (((size_t)1 << PRIMARY_BITS) + ((size_t)1 << (bits)))

static int
build_table(const uint8_t *lens, int nsyms, int bits, unsigned shift, uint32_t *table)
{
    int count[17] = {0};
    int first[18];
    uint16_t order[512];
    for (int s = 0; s < nsyms; s++)
        count[lens[s]]++;
    first[1] = 0;
    for (int n = 1; n <= 16; n++)
        first[n + 1] = first[n] + count[n];
    for (int s = 0; s < nsyms; s++)
        if (lens[s])
            order[first[lens[s]]++] = (uint16_t)s;
    int p = bits < PRIMARY_BITS ? bits : PRIMARY_BITS;
    int w = bits - p;                       /* sub-table width */
    size_t size = (size_t)1 << bits;        /* the whole code space, `bits` wide */
    size_t next_sub = (size_t)1 << p;       /* where the next sub-table starts */
    size_t filled = 0;                      /* primary entries set so far */
    size_t code = 0, sub = 0;
    int prev = 0, k = 0;
    for (int n = 1; n <= 16; n++) {
        for (int j = 0; j < count[n]; j++, k++) {
            if (prev)
                code <<= n - prev;
            prev = n;
            size_t start = code << (bits - n), span = (size_t)1 << (bits - n);
            if (start + span > size)
                return -1;
            uint32_t e = (uint32_t)order[k] << shift | (uint32_t)n;
            if (n <= p) {
                size_t ps = code << (p - n), pspan = (size_t)1 << (p - n);
                for (size_t i = 0; i < pspan; i++)
                    table[ps + i] = e;
                filled = ps + pspan;
            } else {
                size_t prefix = start >> w;
                if (prefix == filled) {     /* first code under this prefix */
                    sub = next_sub;
                    next_sub += (size_t)1 << w;
                    table[prefix] = SUB_FLAG | (uint32_t)sub;
                    memset(table + sub, 0, ((size_t)1 << w) * sizeof table[0]);
                    filled = prefix + 1;
                }
                size_t ss = sub + (start & (((size_t)1 << w) - 1));
                for (size_t i = 0; i < span; i++)
                    table[ss + i] = e;
            }
            code++;
        }
    }
    memset(table + filled, 0, (((size_t)1 << p) - filled) * sizeof table[0]);
    return p;
}

/* The entry for a `bits`-bit window (p = the primary width build_table returned). */
static inline uint32_t
lookup(const uint32_t *table, int bits, int p, uint32_t window)
{
    uint32_t e = table[window >> (bits - p)];
    if (e & SUB_FLAG)
        e = table[(e & ~SUB_FLAG) + (window & ((1u << (bits - p)) - 1))];
    return e;
}

/* ------------------------------------------------------------------ XPRESS Huffman */

#define X_TABLE_BITS 15
#define X_CHUNK "XPRESS chunk"

/* Scratch of one XPRESS decode (kept off the stack: 64 KiB). */
struct xstate {
    uint32_t table[TABLE_CAP(X_TABLE_BITS)];
};

static Py_ssize_t
xpress_decode(const uint8_t *src, Py_ssize_t end, uint8_t *out, Py_ssize_t size,
              struct xstate *st, struct wof_error *err)
{
    if (end < 260)
        FAIL_AT(err, X_CHUNK, -1, "XPRESS Huffman chunk of %zd bytes is too short", end);
    uint8_t lens[512];
    int any = 0;
    for (int i = 0; i < 256; i++) {
        lens[2 * i] = src[i] & 15;
        lens[2 * i + 1] = src[i] >> 4;
        any |= src[i];
    }
    if (!any)
        FAIL_AT(err, "XPRESS Huffman table", -1, "empty Huffman table");
    int primary = build_table(lens, 512, X_TABLE_BITS, 4, st->table);
    if (primary < 0)
        FAIL_AT(err, "XPRESS Huffman table", -1, "Huffman code lengths oversubscribed");
    const uint32_t *table = st->table;

    /* The Python twin reads from the input followed by 8 zero bytes; a word starting at
     * or after end + 7 is past that padding ("input ran out", offset = end). */
#define BYTE(i) ((i) < end ? (unsigned)src[i] : 0u)
#define REFILL() do { \
        if (pos + 2 > end + 8) \
            FAIL_AT(err, X_CHUNK, end, "XPRESS Huffman input ran out"); \
        uint32_t w_ = pos + 2 <= end ? (uint32_t)src[pos] | (uint32_t)src[pos + 1] << 8 \
                                     : BYTE(pos) | BYTE(pos + 1) << 8; \
        bits |= w_ << -extra; \
        pos += 2; \
        extra += 16; \
    } while (0)

    uint32_t bits = ((uint32_t)src[256] | (uint32_t)src[257] << 8) << 16 |
                    ((uint32_t)src[258] | (uint32_t)src[259] << 8);
    Py_ssize_t pos = 260;
    int extra = 16;
    Py_ssize_t n_out = 0;
    while (n_out < size) {
        uint32_t e = lookup(table, X_TABLE_BITS, primary, bits >> 17);
        if (!e)
            FAIL_AT(err, X_CHUNK, pos, "invalid Huffman code");
        unsigned n = e & 15;
        bits <<= n;
        extra -= (int)n;
        if (extra < 0)
            REFILL();
        unsigned symbol = e >> 4;
        if (symbol < 256) {
            out[n_out++] = (uint8_t)symbol;
            continue;
        }
        symbol -= 256;
        uint64_t length = symbol & 15;
        unsigned obits = symbol >> 4;
        if (length == 15) {
            if (pos >= end)
                FAIL_AT(err, X_CHUNK, pos, "XPRESS match length past the input");
            length = src[pos];
            pos += 1;
            if (length == 255) {
                if (pos + 2 > end)
                    FAIL_AT(err, X_CHUNK, pos, "XPRESS match length past the input");
                length = (uint64_t)src[pos] | (uint64_t)src[pos + 1] << 8;
                pos += 2;
                if (length == 0) {
                    if (pos + 4 > end)
                        FAIL_AT(err, X_CHUNK, pos, "XPRESS match length past the input");
                    length = (uint64_t)src[pos] | (uint64_t)src[pos + 1] << 8 |
                             (uint64_t)src[pos + 2] << 16 | (uint64_t)src[pos + 3] << 24;
                    pos += 4;
                }
                if (length < 15)
                    FAIL_AT(err, X_CHUNK, pos, "XPRESS match length below 15");
                length -= 15;
            }
            length += 15;
        }
        length += 3;
        uint32_t offset = (obits ? bits >> (32 - obits) : 0) | (uint32_t)1 << obits;
        bits <<= obits;
        extra -= (int)obits;
        if (extra < 0)
            REFILL();
        if ((Py_ssize_t)offset > n_out)
            FAIL_AT(err, X_CHUNK, pos, "XPRESS match %u bytes back at output %zd",
                    (unsigned)offset, n_out);
        if (length > (uint64_t)(size - n_out))
            length = (uint64_t)(size - n_out);
        if (offset >= 8 && (uint64_t)(size - n_out) >= length + 8) {
            uint8_t *o = out + n_out;  /* eight at a time, as in lzx_decode */
            const uint8_t *from = o - offset;
            for (size_t k = 0; k < (size_t)length; k += 8)
                memcpy(o + k, from + k, 8);
        } else {
            copy_match(out + n_out, offset, (size_t)length);
        }
        n_out += (Py_ssize_t)length;
    }
#undef REFILL
#undef BYTE
    return n_out;
}

/* ------------------------------------------------------------------ LZX */

#define L_CHUNK "LZX chunk"
#define L_NUM_CHARS 256
#define L_MAIN_SYMBOLS (256 + 30 * 8)
#define L_LEN_SYMBOLS 249
#define L_PRECODE_SYMBOLS 20
#define L_ALIGNED_SYMBOLS 8
#define L_DEFAULT_BLOCK 32768
#define L_E8_FILE_SIZE 12000000
#define L_MAX_CHUNK 32768

static const uint32_t slot_base[30] = {
    0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
    1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576};
static const uint8_t extra_bits[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11,
    11, 12, 12, 13, 13};

struct lstate {
    uint32_t main[TABLE_CAP(16)];
    uint32_t len[TABLE_CAP(16)];
    uint32_t pre[TABLE_CAP(15)];
    uint32_t aligned[TABLE_CAP(7)];
};

/* 16-bit little-endian words, most significant bit first, refilled a word at a time;
 * past the end it reads zeros until 32 bytes past it, then fails (as lzx.py's _Bits). */
struct lbits {
    const uint8_t *data;
    Py_ssize_t pos, end;
    uint64_t buf;  /* the low n bits are the unread ones (bits above them are stale) */
    int n;
};

static inline int
lb_ensure(struct lbits *b, int k, struct wof_error *err)
{
    while (b->n < k) {
        Py_ssize_t p = b->pos;
        uint32_t word;
        if (p + 2 <= b->end)
            word = (uint32_t)b->data[p] | (uint32_t)b->data[p + 1] << 8;
        else if (p >= b->end + 32)
            FAIL_AT(err, L_CHUNK, p, "input ran out");
        else
            word = 0;
        b->pos = p + 2;
        b->buf = b->buf << 16 | word;
        b->n += 16;
    }
    return 0;
}

/* n bits (0..16) into *v; returns -1 on error. */
static inline int
lb_bits(struct lbits *b, int k, uint32_t *v, struct wof_error *err)
{
    if (k == 0) {
        *v = 0;
        return 0;
    }
    if (lb_ensure(b, k, err) < 0)
        return -1;
    b->n -= k;
    *v = (uint32_t)((b->buf >> b->n) & ((1u << k) - 1));
    return 0;
}

struct ltable {
    const uint32_t *t;
    int bits, primary;
};

static inline int
lb_symbol(struct lbits *b, struct ltable tb, unsigned *sym, struct wof_error *err)
{
    if (lb_ensure(b, tb.bits, err) < 0)
        return -1;
    uint32_t window = (uint32_t)((b->buf >> (b->n - tb.bits)) & (((uint64_t)1 << tb.bits) - 1));
    uint32_t e = lookup(tb.t, tb.bits, tb.primary, window);
    if (!e)
        FAIL_AT(err, L_CHUNK, b->pos, "invalid Huffman code");
    b->n -= (int)(e & 31);
    *sym = e >> 5;
    return 0;
}

/* lzx.py's _table: the table is 2**(longest length) entries (1 if none). */
static int
lzx_table(const uint8_t *lens, int nsyms, int maxlen, uint32_t *storage, struct ltable *tb,
          struct wof_error *err)
{
    int bits = 0;
    for (int s = 0; s < nsyms; s++)
        if (lens[s] > bits)
            bits = lens[s];
    if (bits == 0)
        bits = 1;
    if (bits > maxlen)
        FAIL_AT(err, L_CHUNK, -1, "codeword too long");
    int primary = build_table(lens, nsyms, bits, 5, storage);
    if (primary < 0)
        FAIL_AT(err, L_CHUNK, -1, "Huffman code lengths oversubscribed");
    tb->t = storage;
    tb->bits = bits;
    tb->primary = primary;
    return 0;
}

#define TRY(x) do { if ((x) < 0) return -1; } while (0)

static int
read_lens(struct lbits *b, uint8_t *lens, int start, int count, uint32_t *pre_storage,
          struct wof_error *err)
{
    uint8_t pl[L_PRECODE_SYMBOLS];
    for (int k = 0; k < L_PRECODE_SYMBOLS; k++) {
        uint32_t v;
        TRY(lb_bits(b, 4, &v, err));
        pl[k] = (uint8_t)v;
    }
    struct ltable pre;
    TRY(lzx_table(pl, L_PRECODE_SYMBOLS, 15, pre_storage, &pre, err));
    int i = start, end = start + count;
    while (i < end) {
        unsigned p;
        uint32_t v;
        TRY(lb_symbol(b, pre, &p, err));
        if (p < 17) {
            lens[i] = (uint8_t)((lens[i] + 17 - p) % 17);
            i++;
            continue;
        }
        int run;
        uint8_t value;
        if (p == 17) {
            TRY(lb_bits(b, 4, &v, err));
            run = 4 + (int)v;
            value = 0;
        } else if (p == 18) {
            TRY(lb_bits(b, 5, &v, err));
            run = 20 + (int)v;
            value = 0;
        } else {
            unsigned q;
            TRY(lb_bits(b, 1, &v, err));
            run = 4 + (int)v;
            TRY(lb_symbol(b, pre, &q, err));
            if (q > 16)
                FAIL_AT(err, L_CHUNK, b->pos, "bad run in codeword lengths");
            value = (uint8_t)((lens[i] + 17 - q) % 17);
        }
        if (run > end - i)
            run = end - i;
        memset(lens + i, value, (size_t)run);
        i += run;
    }
    return 0;
}

static void
undo_e8(uint8_t *out, Py_ssize_t size)
{
    Py_ssize_t limit = size - 10;
    Py_ssize_t i = 0;
    while (i < limit) {
        const uint8_t *hit = memchr(out + i, 0xE8, (size_t)(limit - i));
        if (hit == NULL)
            break;
        i = hit - out;
        uint8_t *p = out + i + 1;
        int32_t value = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                  (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t w;
        int change = 1;
        if (value >= 0 && value < L_E8_FILE_SIZE)
            w = (uint32_t)value - (uint32_t)i;
        else if (value < 0 && (int64_t)value >= -(int64_t)i)
            w = (uint32_t)value + L_E8_FILE_SIZE;
        else
            change = 0;
        if (change) {
            p[0] = (uint8_t)w;
            p[1] = (uint8_t)(w >> 8);
            p[2] = (uint8_t)(w >> 16);
            p[3] = (uint8_t)(w >> 24);
        }
        i += 5;
    }
}

static Py_ssize_t
lzx_decode(const uint8_t *src, Py_ssize_t src_len, uint8_t *out, Py_ssize_t size,
           struct lstate *st, struct wof_error *err)
{
    struct lbits b = {src, 0, src_len, 0, 0};
    uint8_t main_lens[L_MAIN_SYMBOLS] = {0};
    uint8_t len_lens[L_LEN_SYMBOLS] = {0};
    uint32_t r[3] = {1, 1, 1};
    int e8 = 0;
    Py_ssize_t n_out = 0;
    uint32_t v, hi, lo;
    while (n_out < size) {
        TRY(lb_ensure(&b, 4, err));
        uint32_t btype, flag, block;
        TRY(lb_bits(&b, 3, &btype, err));
        TRY(lb_bits(&b, 1, &flag, err));
        if (flag) {
            block = L_DEFAULT_BLOCK;
        } else {
            TRY(lb_bits(&b, 8, &hi, err));
            TRY(lb_bits(&b, 8, &lo, err));
            block = hi << 8 | lo;
        }
        if (block < 1 || (Py_ssize_t)block > size - n_out)
            FAIL_AT(err, L_CHUNK, b.pos, "block of %u bytes at output %zd of %zd",
                    (unsigned)block, n_out, size);
        if (btype == 3) {
            TRY(lb_ensure(&b, 1, err));  /* align */
            b.n = 0;
            b.buf = 0;
            if (b.pos + 12 > b.end)
                FAIL_AT(err, L_CHUNK, b.pos, "uncompressed block past the input");
            for (int k = 0; k < 3; k++) {
                const uint8_t *q = src + b.pos + 4 * k;
                r[k] = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                       (uint32_t)q[3] << 24;
            }
            b.pos += 12;
            if (!r[0] || !r[1] || !r[2])
                FAIL_AT(err, L_CHUNK, b.pos, "repeat offset 0 in an uncompressed block");
            if (b.pos + (Py_ssize_t)block > b.end)
                FAIL_AT(err, L_CHUNK, b.pos, "uncompressed block past the input");
            memcpy(out + n_out, src + b.pos, block);
            b.pos += block;
            n_out += block;
            if ((block & 1) && b.pos < b.end)
                b.pos += 1;
            e8 = 1;
            continue;
        }
        if (btype != 1 && btype != 2)
            FAIL_AT(err, L_CHUNK, b.pos, "block type %u", (unsigned)btype);
        struct ltable aligned = {NULL, 0, 0}, main, lengths = {NULL, 0, 0};
        if (btype == 2) {
            uint8_t al[L_ALIGNED_SYMBOLS];
            for (int k = 0; k < L_ALIGNED_SYMBOLS; k++) {
                TRY(lb_bits(&b, 3, &v, err));
                al[k] = (uint8_t)v;
            }
            TRY(lzx_table(al, L_ALIGNED_SYMBOLS, 7, st->aligned, &aligned, err));
        }
        TRY(read_lens(&b, main_lens, 0, L_NUM_CHARS, st->pre, err));
        TRY(read_lens(&b, main_lens, L_NUM_CHARS, L_MAIN_SYMBOLS - L_NUM_CHARS, st->pre, err));
        TRY(lzx_table(main_lens, L_MAIN_SYMBOLS, 16, st->main, &main, err));
        TRY(read_lens(&b, len_lens, 0, L_LEN_SYMBOLS, st->pre, err));
        int any_len = 0;
        for (int k = 0; k < L_LEN_SYMBOLS; k++)
            any_len |= len_lens[k];
        if (any_len)
            TRY(lzx_table(len_lens, L_LEN_SYMBOLS, 16, st->len, &lengths, err));
        if (main_lens[0xE8])
            e8 = 1;
        Py_ssize_t stop = n_out + block;
        while (n_out < stop) {
            unsigned s;
            TRY(lb_symbol(&b, main, &s, err));
            if (s < L_NUM_CHARS) {
                out[n_out++] = (uint8_t)s;
                continue;
            }
            s -= L_NUM_CHARS;
            uint32_t length = s & 7, slot = s >> 3, offset;
            if (length == 7) {
                unsigned ls;
                if (lengths.t == NULL)
                    FAIL_AT(err, L_CHUNK, b.pos,
                            "match length symbol with an empty length code");
                TRY(lb_symbol(&b, lengths, &ls, err));
                length += ls;
            }
            length += 2;
            if (slot < 3) {
                offset = r[slot];
                r[slot] = r[0];
                r[0] = offset;
            } else {
                int extra = extra_bits[slot];
                offset = slot_base[slot];
                if (aligned.t != NULL && extra >= 3) {
                    unsigned a;
                    TRY(lb_bits(&b, extra - 3, &v, err));
                    offset += v << 3;
                    TRY(lb_symbol(&b, aligned, &a, err));
                    offset += a;
                } else {
                    TRY(lb_bits(&b, extra, &v, err));
                    offset += v;
                }
                offset -= 2;
                r[2] = r[1];
                r[1] = r[0];
                r[0] = offset;
            }
            if ((Py_ssize_t)length > stop - n_out || (Py_ssize_t)offset > n_out || offset == 0)
                FAIL_AT(err, L_CHUNK, b.pos, "match of %u bytes %u back at output %zd",
                        (unsigned)length, (unsigned)offset, n_out);
            if (offset >= 8 && size - n_out >= (Py_ssize_t)length + 8) {
                /* eight bytes at a time, each read from bytes already written; up to 7
                 * bytes past the match are overwritten later (they are inside `out`) */
                uint8_t *o = out + n_out;
                const uint8_t *from = o - offset;
                for (uint32_t k = 0; k < length; k += 8)
                    memcpy(o + k, from + k, 8);
            } else {
                copy_match(out + n_out, offset, length);
            }
            n_out += length;
        }
    }
    if (e8 && size > 10)
        undo_e8(out, size);
    return n_out;
}

/* ------------------------------------------------------------------ Python glue */

typedef Py_ssize_t (*decode_fn)(const uint8_t *, Py_ssize_t, uint8_t *, Py_ssize_t, void *,
                                struct wof_error *);

static Py_ssize_t
xpress_entry(const uint8_t *s, Py_ssize_t n, uint8_t *o, Py_ssize_t size, void *st,
             struct wof_error *e)
{
    return xpress_decode(s, n, o, size, st, e);
}

static Py_ssize_t
lzx_entry(const uint8_t *s, Py_ssize_t n, uint8_t *o, Py_ssize_t size, void *st,
          struct wof_error *e)
{
    return lzx_decode(s, n, o, size, st, e);
}

static PyObject *
raise_error(const struct wof_error *err)
{
    PyObject *exc;
    if (err->offset < 0)
        exc = Py_BuildValue("(ssO)", err->msg, err->structure, Py_None);
    else
        exc = Py_BuildValue("(ssn)", err->msg, err->structure, err->offset);
    if (exc != NULL) {
        PyErr_SetObject(WofError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *
run(PyObject *args, const char *fmt, Py_ssize_t max_size, const char *size_msg,
    const char *structure, decode_fn fn, size_t state_size)
{
    Py_buffer buf;
    Py_ssize_t size;
    struct wof_error err = {"", NULL, -1};
    if (!PyArg_ParseTuple(args, fmt, &buf, &size))
        return NULL;
    if (size < 0 || size > max_size) {
        PyBuffer_Release(&buf);
        snprintf(err.msg, sizeof err.msg, size_msg, size);
        err.structure = structure;
        return raise_error(&err);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL || size == 0) {
        PyBuffer_Release(&buf);
        return out;
    }
    void *state = PyMem_RawMalloc(state_size);
    if (state == NULL) {
        PyBuffer_Release(&buf);
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = fn((const uint8_t *)buf.buf, buf.len, (uint8_t *)PyBytes_AS_STRING(out), size, state,
           &err);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(state);
    PyBuffer_Release(&buf);
    if (n < 0) {
        Py_DECREF(out);
        return raise_error(&err);
    }
    return out;
}

static PyObject *
py_xpress(PyObject *self, PyObject *args)
{
    (void)self;
    return run(args, "y*n:xpress", 65536, "XPRESS Huffman chunk of %zd bytes", X_CHUNK,
               xpress_entry, sizeof(struct xstate));
}

static PyObject *
py_lzx(PyObject *self, PyObject *args)
{
    (void)self;
    return run(args, "y*n:lzx", L_MAX_CHUNK, "LZX chunk of %zd bytes", L_CHUNK, lzx_entry,
               sizeof(struct lstate));
}

static PyMethodDef methods[] = {
    {"xpress", py_xpress, METH_VARARGS,
     "xpress(data, size) -> bytes: one XPRESS Huffman chunk; raises Error(msg, structure, offset)."},
    {"lzx", py_lzx, METH_VARARGS,
     "lzx(data, size) -> bytes: one WIM/WOF LZX chunk; raises Error(msg, structure, offset)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_wofdecomp",
    .m_doc = "Native XPRESS Huffman and LZX decoders for WOF chunks (see xpress.py, lzx.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__wofdecomp(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    WofError = PyErr_NewException("ntfs_reader._wofdecomp.Error", PyExc_ValueError, NULL);
    if (WofError == NULL || PyModule_AddObjectRef(m, "Error", WofError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
