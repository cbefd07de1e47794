/*
 * NTFS metadata parsing in C: MFT record fixups and the attribute walk, mapping pairs,
 * $FILE_NAME values and index entries ($INDEX_ROOT and INDX records). Listing a big
 * directory or stat'ing every file of a volume spends most of its time here, and the Python
 * twins (record.py, runlist.py, attrs.py, index.py) cost 10-40 us per record.
 *
 * Each function builds exactly the Python objects its twin returns (the dataclasses and
 * named tuples are handed over once by init()), so callers cannot tell which one ran.
 * When the input is bad, or anything falls outside what this file handles (values that do
 * not fit in 64 bits, short buffers), a function returns None and the caller runs the
 * Python twin, which raises the typed error with its message and offset: error reporting
 * lives in one place. tests/fuzz/targets.py (target "ntfs_native") runs both on every
 * input and fails on any difference.
 *
 * Python API (module ntfs_reader._ntfsparse):
 *   init(Attribute, MftRecord, IndexEntry, FileName, Times)
 *   fixups(buf: bytearray, magic: bytes, stride: int) -> True | None
 *   parse_record(data, number: int, offset: int) -> MftRecord | None
 *   record_summary(data, number: int) -> tuple | None   (rpfs/index/scan.py's file_info)
 *   stat_summary(data, number: int) -> tuple | None     (Entry.quick_stat, for attr())
 *   decode_runlist(data, pos, end, first_vcn, total_clusters) -> list | None
 *   parse_entries(buf, start, end) -> list[IndexEntry] | None
 *   parse_file_name(value) -> FileName | None
 *   list_index(root_value, allocation, bitmap, cluster_size, is_root) -> tuple | None
 *       (a directory's listing as arrays: ntfs_reader/listing.py)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* -- the Python classes, and where their slots live --------------------------------------- */

static PyTypeObject *AttributeType, *RecordType, *IndexEntryType, *FileNameType, *TimesType;

static const char *ATTR_FIELDS[] = {
    "type", "name", "flags", "attr_id", "resident", "value", "lowest_vcn", "highest_vcn",
    "compression_unit", "allocated_size", "data_size", "initialized_size", "compressed_size",
    "runs", "raw", "pairs_at", "pairs_end", "record", "offset", "rec_offset", NULL};
enum { A_TYPE, A_NAME, A_FLAGS, A_ID, A_RESIDENT, A_VALUE, A_LOW, A_HIGH, A_CUNIT, A_ALLOC,
       A_DSIZE, A_ISIZE, A_CSIZE, A_RUNS, A_RAW, A_PAIRS_AT, A_PAIRS_END, A_RECORD, A_OFFSET,
       A_REC_OFFSET, A_COUNT };
static Py_ssize_t attr_offsets[A_COUNT];

static const char *RECORD_FIELDS[] = {
    "number", "sequence", "link_count", "flags", "base_ref", "attributes", NULL};
enum { R_NUMBER, R_SEQUENCE, R_LINKS, R_FLAGS, R_BASE, R_ATTRS, R_COUNT };
static Py_ssize_t record_offsets[R_COUNT];

static PyObject *empty_str, *empty_bytes, *small_zero;

/* Finds the offset of each slot of a slots=True dataclass (object members only). */
static int
slot_offsets(PyTypeObject *type, const char **names, Py_ssize_t *out)
{
    for (int i = 0; names[i]; i++) {
        PyObject *d = PyDict_GetItemString(type->tp_dict, names[i]);
        if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, names[i]);
            return -1;
        }
        out[i] = m->offset;
    }
    return 0;
}

/* A new instance with every slot filled from `values` (references stolen; NULL on error,
 * with the values released). */
static PyObject *
make_slots(PyTypeObject *type, const Py_ssize_t *offsets, PyObject **values, int n)
{
    for (int i = 0; i < n; i++) {
        if (values[i] == NULL) {
            for (int j = 0; j < n; j++)
                Py_XDECREF(values[j]);
            return NULL;
        }
    }
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) {
        for (int j = 0; j < n; j++)
            Py_DECREF(values[j]);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        *(PyObject **)((char *)obj + offsets[i]) = values[i];
    return obj;
}

/* A named tuple instance (a tuple subclass) from `n` stolen references. */
static PyObject *
make_tuple(PyTypeObject *type, PyObject **values, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            for (Py_ssize_t j = 0; j < n; j++)
                Py_XDECREF(values[j]);
            return NULL;
        }
    }
    PyObject *t = type->tp_alloc(type, n);
    if (t == NULL) {
        for (Py_ssize_t j = 0; j < n; j++)
            Py_DECREF(values[j]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, values[i]);
    return t;
}

static PyObject *
init(PyObject *self, PyObject *args)
{
    PyTypeObject *a, *r, *ie, *fn, *tm;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyType_Type, &a, &PyType_Type, &r,
                          &PyType_Type, &ie, &PyType_Type, &fn, &PyType_Type, &tm))
        return NULL;
    if (slot_offsets(a, ATTR_FIELDS, attr_offsets) < 0 ||
        slot_offsets(r, RECORD_FIELDS, record_offsets) < 0)
        return NULL;
    if (!PyType_IsSubtype(ie, &PyTuple_Type) || !PyType_IsSubtype(fn, &PyTuple_Type) ||
        !PyType_IsSubtype(tm, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "IndexEntry, FileName and Times must be named tuples");
        return NULL;
    }
    PyTypeObject *types[] = {a, r, ie, fn, tm};
    PyTypeObject **slots[] = {&AttributeType, &RecordType, &IndexEntryType, &FileNameType,
                              &TimesType};
    for (int i = 0; i < 5; i++) {
        Py_INCREF(types[i]);
        Py_XSETREF(*slots[i], types[i]);
    }
    Py_RETURN_NONE;
}

#define READY()                                                                   \
    do {                                                                          \
        if (AttributeType == NULL) {                                              \
            PyErr_SetString(PyExc_RuntimeError, "_ntfsparse.init() not called");  \
            return NULL;                                                          \
        }                                                                         \
    } while (0)

/* -- little-endian reads ---------------------------------------------------------------- */

static inline uint16_t u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t u32(const uint8_t *p) { return (uint32_t)u16(p) | (uint32_t)u16(p + 2) << 16; }
static inline uint64_t u64(const uint8_t *p) { return (uint64_t)u32(p) | (uint64_t)u32(p + 4) << 32; }
static inline int64_t i64(const uint8_t *p) { return (int64_t)u64(p); }

/* -- update sequence fixups --------------------------------------------------------------- */

/* Undoes the update sequence array of buf[0:size] in place, in the same order as
 * record.apply_fixups (a later sector's check sees what an earlier patch wrote). 0 if the
 * buffer is good, -1 if not (buf may then be partly patched: callers work on a copy). */
static int
apply_fixups(uint8_t *buf, Py_ssize_t size, const char *magic, Py_ssize_t stride)
{
    if (size < 8 || memcmp(buf, magic, 4) != 0)
        return -1;
    Py_ssize_t usa_ofs = u16(buf + 4), usa_count = u16(buf + 6);
    if (usa_count - 1 != size / stride || usa_ofs < 8 || usa_ofs + 2 * usa_count > size ||
        (usa_ofs & 1))
        return -1;
    uint8_t usn[2] = {buf[usa_ofs], buf[usa_ofs + 1]};
    for (Py_ssize_t i = 1; i < usa_count; i++) {
        Py_ssize_t end = i * stride;
        if (buf[end - 2] != usn[0] || buf[end - 1] != usn[1])
            return -1;
        Py_ssize_t p = usa_ofs + 2 * i;
        buf[end - 2] = buf[p];
        buf[end - 1] = buf[p + 1];
    }
    return 0;
}

static PyObject *
fixups(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    const char *magic;
    Py_ssize_t magic_len, stride;
    if (!PyArg_ParseTuple(args, "w*y#n", &buf, &magic, &magic_len, &stride))
        return NULL;
    PyObject *result = Py_None;
    if (magic_len == 4 && stride > 0 && buf.len <= (1 << 20)) {
        uint8_t *copy = PyMem_Malloc(buf.len ? buf.len : 1);
        if (copy == NULL) {
            PyBuffer_Release(&buf);
            return PyErr_NoMemory();
        }
        memcpy(copy, buf.buf, buf.len);
        if (apply_fixups(copy, buf.len, magic, stride) == 0) {
            memcpy(buf.buf, copy, buf.len);
            result = Py_True;
        }
        PyMem_Free(copy);
    }
    PyBuffer_Release(&buf);
    Py_INCREF(result);
    return result;
}

/* -- MFT records -------------------------------------------------------------------------- */

static PyObject *
utf16(const uint8_t *p, Py_ssize_t nbytes)
{
    if (nbytes == 0) {
        Py_INCREF(empty_str);
        return empty_str;
    }
    int order = -1; /* little-endian */
    return PyUnicode_DecodeUTF16((const char *)p, nbytes, "surrogatepass", &order);
}

static inline PyObject *
from_i64(int64_t v)
{
    return PyLong_FromLongLong(v);
}

/* The checks of record.parse_record_python, on a private copy of the record: fixups
 * applied, then the header and every attribute header checked. Fills the used size, the
 * first attribute's offset and the attribute count; -1 when the twin must report. */
static int
check_record(uint8_t *buf, Py_ssize_t size, long long number, Py_ssize_t *used,
             Py_ssize_t *first, Py_ssize_t *count)
{
    if (size < 0x30 || size > (1 << 20) || apply_fixups(buf, size, "FILE", 512) < 0)
        return -1;
    uint16_t attrs_off = u16(buf + 0x14);
    uint32_t in_use = u32(buf + 0x18), allocated = u32(buf + 0x1C);
    if ((Py_ssize_t)in_use > size || (Py_ssize_t)allocated != size || attrs_off < 0x30 ||
        attrs_off >= in_use || (attrs_off & 7))
        return -1;
    if (u16(buf + 4) >= 0x30) {
        uint32_t own = u32(buf + 0x2C);
        if (own != 0 && own != (uint32_t)((unsigned long long)number & 0xFFFFFFFFu))
            return -1;
    }
    Py_ssize_t pos = attrs_off, n = 0;
    for (;;) {
        if (pos + 4 > (Py_ssize_t)in_use)
            return -1;
        uint32_t atype = u32(buf + pos);
        if (atype == 0xFFFFFFFFu)
            break;
        if (pos + 16 > (Py_ssize_t)in_use)
            return -1;
        uint32_t alen = u32(buf + pos + 4);
        uint8_t nonres = buf[pos + 8], name_len = buf[pos + 9];
        uint16_t name_off = u16(buf + pos + 10);
        Py_ssize_t end = pos + (Py_ssize_t)alen;
        if (alen < 16 || (alen & 7) || end > (Py_ssize_t)in_use)
            return -1;
        if (name_len && (Py_ssize_t)name_off + 2 * name_len > (Py_ssize_t)alen)
            return -1;
        if (!nonres) {
            if (alen < 24)
                return -1;
            uint32_t vlen = u32(buf + pos + 16);
            uint16_t voff = u16(buf + pos + 20);
            if ((uint64_t)voff + vlen > alen)
                return -1;
        } else {
            if (alen < 64)
                return -1;
            int64_t low = i64(buf + pos + 16), high = i64(buf + pos + 24);
            uint16_t pairs_off = u16(buf + pos + 32);
            uint8_t cunit = buf[pos + 34];
            int64_t alloc = i64(buf + pos + 40), dsize = i64(buf + pos + 48),
                    isize = i64(buf + pos + 56);
            if (low < 0 || high < low - 1 || pairs_off >= alen || pairs_off < 64 || alloc < 0 ||
                dsize < 0 || isize < 0 || cunit > 16)
                return -1;
        }
        n++;
        pos = end;
    }
    *used = in_use;
    *first = attrs_off;
    *count = n;
    return 0;
}

/* The compressed size as parse_record_python reads it (0 unless the header has one). */
static int64_t
compressed_size(const uint8_t *a)
{
    uint32_t alen = u32(a + 4);
    uint16_t aflags = u16(a + 12), pairs_off = u16(a + 32);
    uint8_t cunit = a[34];
    if ((cunit || (aflags & (0x0001 | 0x8000))) && alen >= 72 && pairs_off >= 72)
        return i64(a + 64);
    return 0;
}

/* The Attribute at `pos` of a checked record, as parse_record_python builds it (`data`: the
 * record's bytes, which a non-resident attribute keeps to decode its runs later). */
static PyObject *
make_attribute(const uint8_t *buf, Py_ssize_t pos, PyObject *data, long long number,
               long long offset)
{
    const uint8_t *a = buf + pos;
    uint32_t atype = u32(a), alen = u32(a + 4);
    uint8_t nonres = a[8], name_len = a[9];
    uint16_t name_off = u16(a + 10), aflags = u16(a + 12), attr_id = u16(a + 14);
    PyObject *v[A_COUNT];
    v[A_TYPE] = PyLong_FromUnsignedLong(atype);
    v[A_NAME] = utf16(a + name_off, name_len ? 2 * (Py_ssize_t)name_len : 0);
    v[A_FLAGS] = PyLong_FromLong(aflags);
    v[A_ID] = PyLong_FromLong(attr_id);
    v[A_RESIDENT] = PyBool_FromLong(!nonres);
    v[A_RUNS] = Py_NewRef(Py_None);
    v[A_RECORD] = PyLong_FromLongLong(number);
    v[A_OFFSET] = PyLong_FromLongLong(offset + pos);
    if (!nonres) {
        uint32_t vlen = u32(a + 16);
        uint16_t voff = u16(a + 20);
        v[A_VALUE] = PyBytes_FromStringAndSize((const char *)a + voff, vlen);
        v[A_LOW] = Py_NewRef(small_zero);
        v[A_HIGH] = PyLong_FromLong(-1);
        v[A_CUNIT] = Py_NewRef(small_zero);
        v[A_ALLOC] = Py_NewRef(small_zero);
        v[A_DSIZE] = Py_NewRef(small_zero);
        v[A_ISIZE] = Py_NewRef(small_zero);
        v[A_CSIZE] = Py_NewRef(small_zero);
        v[A_RAW] = Py_NewRef(Py_None);
        v[A_PAIRS_AT] = Py_NewRef(small_zero);
        v[A_PAIRS_END] = Py_NewRef(small_zero);
        v[A_REC_OFFSET] = Py_NewRef(small_zero);
    } else {
        uint16_t pairs_off = u16(a + 32);
        v[A_VALUE] = Py_NewRef(Py_None);
        v[A_LOW] = from_i64(i64(a + 16));
        v[A_HIGH] = from_i64(i64(a + 24));
        v[A_CUNIT] = PyLong_FromLong(a[34]);
        v[A_ALLOC] = from_i64(i64(a + 40));
        v[A_DSIZE] = from_i64(i64(a + 48));
        v[A_ISIZE] = from_i64(i64(a + 56));
        v[A_CSIZE] = from_i64(compressed_size(a));
        v[A_RAW] = Py_NewRef(data);
        v[A_PAIRS_AT] = PyLong_FromSsize_t(pos + pairs_off);
        v[A_PAIRS_END] = PyLong_FromSsize_t(pos + alen);
        v[A_REC_OFFSET] = PyLong_FromLongLong(offset);
    }
    return make_slots(AttributeType, attr_offsets, v, A_COUNT);
}

static PyObject *
parse_record(PyObject *self, PyObject *args)
{
    Py_buffer in;
    long long number, offset;
    READY();
    if (!PyArg_ParseTuple(args, "y*LL", &in, &number, &offset))
        return NULL;
    PyObject *data = NULL, *attrs = NULL, *result = NULL;
    Py_ssize_t size = in.len, in_use, pos, n;
    uint8_t *buf = PyMem_Malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(buf, in.buf, size);
    if (check_record(buf, size, number, &in_use, &pos, &n) < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    data = PyBytes_FromStringAndSize((const char *)buf, in_use);
    attrs = PyList_New(n);
    if (data == NULL || attrs == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *attr = make_attribute(buf, pos, data, number, offset);
        if (attr == NULL)
            goto done;
        PyList_SET_ITEM(attrs, k, attr);
        pos += u32(buf + pos + 4);
    }
    {
        PyObject *v[R_COUNT];
        v[R_NUMBER] = PyLong_FromLongLong(number);
        v[R_SEQUENCE] = PyLong_FromLong(u16(buf + 0x10));
        v[R_LINKS] = PyLong_FromLong(u16(buf + 0x12));
        v[R_FLAGS] = PyLong_FromLong(u16(buf + 0x16));
        v[R_BASE] = PyLong_FromUnsignedLongLong(u64(buf + 0x20));
        v[R_ATTRS] = attrs;
        attrs = NULL;
        result = make_slots(RecordType, record_offsets, v, R_COUNT);
    }
done:
    Py_XDECREF(data);
    Py_XDECREF(attrs);
    PyMem_Free(buf);
    PyBuffer_Release(&in);
    return result;
}

/* -- what the metadata index keeps of a record --------------------------------------------- */

/* Growing byte buffer for the fingerprint's input. */
struct bytebuf {
    uint8_t *p;
    size_t len, cap;
};

static int
bb_add(struct bytebuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = PyMem_Realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

/*
 * record_summary(data, number) -> tuple | None: what rpfs/index/scan.py's file_info takes
 * from one base record, in its order and with its rules (the Python there stays the twin):
 *   (sequence, record flags, si (created, modified, changed, accessed, attributes) | None,
 *    names [(parent_ref, namespace, raw UTF-16 name)], reparse_tag,
 *    fingerprint input (bytes, hashed by the caller), size, allocated, interix,
 *    ads [(name, size)])
 * None also for records this does not handle: an attribute list (extension records are
 * read through the volume) or a non-resident $REPARSE_POINT.
 */
static PyObject *
record_summary(PyObject *self, PyObject *args)
{
    Py_buffer in;
    long long number;
    READY();
    if (!PyArg_ParseTuple(args, "y*L", &in, &number))
        return NULL;
    PyObject *result = NULL, *names = NULL, *ads = NULL, *si = NULL;
    struct bytebuf fp = {NULL, 0, 0};
    Py_ssize_t size = in.len, in_use, pos, n;
    uint8_t *buf = PyMem_Malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(buf, in.buf, size);
    if (check_record(buf, size, number, &in_use, &pos, &n) < 0)
        goto fallback;
    names = PyList_New(0);
    ads = PyList_New(0);
    if (names == NULL || ads == NULL)
        goto done;
    uint32_t reparse_tag = 0;
    int64_t fsize = 0, allocated = 0;
    int interix = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        const uint8_t *a = buf + pos;
        uint32_t atype = u32(a), alen = u32(a + 4);
        uint8_t nonres = a[8], name_len = a[9];
        uint16_t name_off = u16(a + 10), aflags = u16(a + 12);
        const uint8_t *value = NULL;
        uint32_t vlen = 0;
        if (!nonres) {
            vlen = u32(a + 16);
            value = a + u16(a + 20);
        }
        pos += alen;
        if (atype == 0x20)
            goto fallback; /* attribute list */
        if (atype == 0x10 && !nonres && si == NULL) {
            if (vlen < 48)
                goto fallback;
            si = Py_BuildValue("(KKKKk)", (unsigned long long)u64(value),
                               (unsigned long long)u64(value + 8),
                               (unsigned long long)u64(value + 16),
                               (unsigned long long)u64(value + 24), (unsigned long)u32(value + 32));
            if (si == NULL)
                goto done;
        } else if (atype == 0x30 && !nonres) {
            if (vlen < 66)
                goto fallback;
            uint8_t nlen = value[64];
            if (66 + 2 * (Py_ssize_t)nlen > (Py_ssize_t)vlen || nlen == 0)
                goto fallback;
            PyObject *link = Py_BuildValue("(KBy#)", (unsigned long long)u64(value), value[65],
                                           (const char *)value + 66, (Py_ssize_t)2 * nlen);
            if (link == NULL || PyList_Append(names, link) < 0) {
                Py_XDECREF(link);
                goto done;
            }
            Py_DECREF(link);
        } else if (atype == 0xC0) {
            if (nonres)
                goto fallback;
            reparse_tag = vlen >= 4 ? u32(value) : 0;
            if (bb_add(&fp, "R", 1) < 0 || bb_add(&fp, value, vlen) < 0)
                goto nomem;
        } else if (atype == 0x80) {
            static const uint8_t nul[2] = {0, 0};
            const uint8_t *name = a + name_off;
            size_t nbytes = 2 * (size_t)name_len;
            /* the name as UTF-16LE then one NUL byte */
            if (bb_add(&fp, "D", 1) < 0 || bb_add(&fp, name, nbytes) < 0 ||
                bb_add(&fp, nul, 1) < 0)
                goto nomem;
            int64_t low = nonres ? i64(a + 16) : 0;
            int64_t asize = nonres ? i64(a + 48) : (int64_t)vlen;
            if (!nonres) {
                if (bb_add(&fp, value, vlen) < 0)
                    goto nomem;
            } else {
                uint8_t q[32];
                int64_t fields[4] = {low, i64(a + 48), i64(a + 56), compressed_size(a)};
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 8; j++)
                        q[8 * i + j] = (uint8_t)((uint64_t)fields[i] >> (8 * j));
                uint16_t pairs_off = u16(a + 32);
                if (bb_add(&fp, q, 32) < 0 || bb_add(&fp, a + pairs_off, alen - pairs_off) < 0)
                    goto nomem;
            }
            if (!nonres || low == 0) {
                if (name_len == 0) {
                    fsize = asize;
                    if (nonres)
                        allocated = (a[34] || (aflags & 0x8001)) ? compressed_size(a)
                                                                 : i64(a + 40);
                    else if (vlen >= 8 && memcmp(value, "IntxLNK\x01", 8) == 0)
                        interix = 1;
                } else {
                    PyObject *s = utf16(name, nbytes);
                    PyObject *item = s ? Py_BuildValue("(NL)", s, (long long)asize) : NULL;
                    if (item == NULL || PyList_Append(ads, item) < 0) {
                        Py_XDECREF(item);
                        goto done;
                    }
                    Py_DECREF(item);
                }
            }
        }
    }
    result = Py_BuildValue("(iiOOky#LLiO)", (int)u16(buf + 0x10), (int)u16(buf + 0x16),
                           si ? si : Py_None, names, (unsigned long)reparse_tag,
                           fp.p ? (const char *)fp.p : "", (Py_ssize_t)fp.len,
                           (long long)fsize, (long long)allocated, interix, ads);
    goto done;
nomem:
    PyErr_NoMemory();
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(si);
    Py_XDECREF(names);
    Py_XDECREF(ads);
    PyMem_Free(fp.p);
    PyMem_Free(buf);
    PyBuffer_Release(&in);
    return result;
}

/* -- what a stat of a plain file or directory needs ------------------------------------------ */

/* The extent of an attribute that FileAttributes.first() picks: lowest VCN, then record order. */
static void
pick_first(const uint8_t *a, const uint8_t **best, int64_t *best_low)
{
    int64_t low = a[8] ? i64(a + 16) : 0;
    if (*best == NULL || low < *best_low) {
        *best = a;
        *best_low = low;
    }
}

/* (size, allocated) of an attribute as Entry.size / Entry.allocated_size read them. */
static void
sizes(const uint8_t *a, int64_t *size, int64_t *allocated)
{
    if (a == NULL) {
        *size = *allocated = 0;
    } else if (!a[8]) {
        *size = u32(a + 16);
        *allocated = 0;
    } else {
        *size = i64(a + 48);
        *allocated = (a[34] || (u16(a + 12) & 0x8001)) ? compressed_size(a) : i64(a + 40);
    }
}

/*
 * stat_summary(data, number) -> (sequence, record flags, (created, modified, changed,
 * accessed), names outside the DOS namespace, size and allocated of the unnamed $DATA,
 * allocated of $INDEX_ALLOCATION:$I30) | None: what rpfs/ntfs_nodes.py's attr() reads
 * through Entry (times, size, nlink, allocated_size) for a base record that is neither a
 * reparse point nor a possible Interix symlink and has no attribute list and a resident
 * $STANDARD_INFORMATION. None for anything else: the Entry path answers (and reports).
 */
static PyObject *
stat_summary(PyObject *self, PyObject *args)
{
    Py_buffer in;
    long long number;
    if (!PyArg_ParseTuple(args, "y*L", &in, &number))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t size = in.len, in_use, pos, n;
    uint8_t *buf = PyMem_Malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(buf, in.buf, size);
    if (check_record(buf, size, number, &in_use, &pos, &n) < 0 || u64(buf + 0x20) != 0)
        goto fallback;
    static const uint8_t I30[8] = {'$', 0, 'I', 0, '3', 0, '0', 0};
    const uint8_t *si = NULL, *data = NULL, *alloc = NULL;
    int si_seen = 0;
    int64_t data_low = 0, alloc_low = 0;
    long nondos = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        const uint8_t *a = buf + pos;
        uint32_t atype = u32(a), alen = u32(a + 4);
        uint8_t nonres = a[8], name_len = a[9];
        const uint8_t *name = a + u16(a + 10);
        pos += alen;
        if (atype == 0x20 || atype == 0xC0)
            goto fallback;
        if (atype == 0x10 && name_len == 0 && !si_seen) {
            si_seen = 1;
            if (nonres || u32(a + 16) < 48)
                goto fallback;
            si = a + u16(a + 20);
        } else if (atype == 0x30 && !nonres) {
            uint32_t vlen = u32(a + 16);
            const uint8_t *v = a + u16(a + 20);
            if (vlen < 66 || v[64] == 0 || 66 + 2 * (uint32_t)v[64] > vlen)
                goto fallback;
            if (v[65] != 2)
                nondos++;
        } else if (atype == 0x80 && name_len == 0) {
            pick_first(a, &data, &data_low);
        } else if (atype == 0xA0 && name_len == 4 && memcmp(name, I30, 8) == 0) {
            pick_first(a, &alloc, &alloc_low);
        }
    }
    uint16_t rflags = u16(buf + 0x16);
    if (si == NULL || ((u32(si + 32) & 0x4) && !(rflags & 0x2)))
        goto fallback; /* times from $FILE_NAME, or a possible Interix symlink */
    int64_t dsize, dalloc, isize, ialloc;
    sizes(data, &dsize, &dalloc);
    sizes(alloc, &isize, &ialloc);
    result = Py_BuildValue("(ii(KKKK)lLLL)", (int)u16(buf + 0x10), (int)rflags,
                           (unsigned long long)u64(si), (unsigned long long)u64(si + 8),
                           (unsigned long long)u64(si + 16), (unsigned long long)u64(si + 24),
                           nondos, (long long)dsize, (long long)dalloc, (long long)ialloc);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(buf);
    PyBuffer_Release(&in);
    return result;
}

/*
 * data_attribute(data, number, offset) -> (sequence, record flags, file attributes of
 * $STANDARD_INFORMATION, Attribute) | None: the unnamed $DATA of a plain base record, built
 * exactly as parse_record builds it, without the record's other attribute objects (what
 * Entry.open needs of a file, once per file of a restore). None unless the record is a
 * base record with no attribute list and no reparse point, with a resident unnamed
 * $STANDARD_INFORMATION of 48 bytes or more first, and exactly one unnamed $DATA
 * attribute. The twin is record.data_attribute_python.
 */
static PyObject *
data_attribute(PyObject *self, PyObject *args)
{
    Py_buffer in;
    long long number, offset;
    READY();
    if (!PyArg_ParseTuple(args, "y*LL", &in, &number, &offset))
        return NULL;
    PyObject *result = NULL, *data = NULL, *attr = NULL;
    Py_ssize_t size = in.len, in_use, pos, n, found = -1;
    uint8_t *buf = PyMem_Malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(buf, in.buf, size);
    if (check_record(buf, size, number, &in_use, &pos, &n) < 0 || u64(buf + 0x20) != 0)
        goto fallback;
    const uint8_t *si = NULL;
    int si_seen = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        const uint8_t *a = buf + pos;
        uint32_t atype = u32(a), alen = u32(a + 4);
        uint8_t name_len = a[9];
        if (atype == 0x20 || atype == 0xC0)
            goto fallback;
        if (atype == 0x10 && !si_seen) {
            si_seen = 1;
            if (name_len || a[8] || u32(a + 16) < 48)
                goto fallback;
            si = a + u16(a + 20);
        } else if (atype == 0x80 && name_len == 0) {
            if (found >= 0)
                goto fallback;
            found = pos;
        }
        pos += alen;
    }
    if (si == NULL || found < 0)
        goto fallback;
    data = PyBytes_FromStringAndSize((const char *)buf, in_use);
    if (data == NULL)
        goto done;
    attr = make_attribute(buf, found, data, number, offset);
    if (attr == NULL)
        goto done;
    result = Py_BuildValue("(iikO)", (int)u16(buf + 0x10), (int)u16(buf + 0x16),
                           (unsigned long)u32(si + 32), attr);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(attr);
    Py_XDECREF(data);
    PyMem_Free(buf);
    PyBuffer_Release(&in);
    return result;
}

/* -- mapping pairs ------------------------------------------------------------------------ */

static PyObject *
decode_runlist(PyObject *self, PyObject *args)
{
    Py_buffer in;
    Py_ssize_t pos, end;
    PyObject *first_obj, *total_obj;
    if (!PyArg_ParseTuple(args, "y*nnOO", &in, &pos, &end, &first_obj, &total_obj))
        return NULL;
    PyObject *runs = NULL;
    int overflow = 0;
    long long vcn = PyLong_AsLongLongAndOverflow(first_obj, &overflow);
    if (overflow || (vcn == -1 && PyErr_Occurred()))
        goto fallback;
    long long total = PyLong_AsLongLongAndOverflow(total_obj, &overflow);
    if (overflow || (total == -1 && PyErr_Occurred()))
        goto fallback;
    if (pos < 0 || end > in.len)
        goto fallback;
    const uint8_t *data = in.buf;
    runs = PyList_New(0);
    if (runs == NULL)
        goto error;
    long long lcn = 0;
    while (pos < end) {
        uint8_t header = data[pos];
        if (header == 0)
            goto out;
        int len_size = header & 0x0F, off_size = header >> 4;
        Py_ssize_t start = pos + 1, mid = start + len_size, nxt = mid + off_size;
        if (len_size == 0 || len_size > 8 || off_size > 8 || nxt > end)
            goto fallback;
        /* sign-extended little-endian fields of 1..8 bytes */
        uint64_t ul = 0;
        for (int i = len_size - 1; i >= 0; i--)
            ul = ul << 8 | data[start + i];
        if (len_size < 8 && (data[start + len_size - 1] & 0x80))
            ul |= ~(uint64_t)0 << (8 * len_size);
        long long length = (long long)ul;
        if (length <= 0)
            goto fallback;
        PyObject *run;
        if (off_size == 0) {
            run = Py_BuildValue("(LLO)", vcn, length, Py_None);
        } else {
            uint64_t ud = 0;
            for (int i = off_size - 1; i >= 0; i--)
                ud = ud << 8 | data[mid + i];
            if (off_size < 8 && (data[mid + off_size - 1] & 0x80))
                ud |= ~(uint64_t)0 << (8 * off_size);
            long long sum, last;
            if (__builtin_add_overflow(lcn, (long long)ud, &sum))
                goto fallback;
            lcn = sum;
            if (lcn < 0 || __builtin_add_overflow(lcn, length, &last) || last > total)
                goto fallback;
            run = Py_BuildValue("(LLL)", vcn, length, lcn);
        }
        if (run == NULL || PyList_Append(runs, run) < 0) {
            Py_XDECREF(run);
            goto error;
        }
        Py_DECREF(run);
        if (__builtin_add_overflow(vcn, length, &vcn))
            goto fallback;
        pos = nxt;
    }
    goto fallback; /* not terminated */
out:
    PyBuffer_Release(&in);
    return runs;
fallback:
    PyErr_Clear();
    Py_XDECREF(runs);
    PyBuffer_Release(&in);
    Py_RETURN_NONE;
error:
    Py_XDECREF(runs);
    PyBuffer_Release(&in);
    return NULL;
}

/* -- $FILE_NAME and index entries --------------------------------------------------------- */

/* A FileName from a $FILE_NAME value of `len` bytes; NULL with no exception set when the
 * value is bad (the caller falls back), NULL with one set on a real failure. */
static PyObject *
file_name(const uint8_t *p, Py_ssize_t len)
{
    if (len < 66)
        return NULL;
    uint8_t nlen = p[64];
    if (66 + 2 * (Py_ssize_t)nlen > len || nlen == 0)
        return NULL;
    PyObject *tv[4] = {PyLong_FromUnsignedLongLong(u64(p + 8)),
                       PyLong_FromUnsignedLongLong(u64(p + 16)),
                       PyLong_FromUnsignedLongLong(u64(p + 24)),
                       PyLong_FromUnsignedLongLong(u64(p + 32))};
    PyObject *v[8];
    v[0] = PyLong_FromUnsignedLongLong(u64(p));
    v[1] = make_tuple(TimesType, tv, 4);
    v[2] = from_i64(i64(p + 40));
    v[3] = from_i64(i64(p + 48));
    v[4] = PyLong_FromUnsignedLong(u32(p + 56));
    v[5] = PyLong_FromUnsignedLong(u32(p + 60));
    v[6] = PyLong_FromLong(p[65]);
    v[7] = PyBytes_FromStringAndSize((const char *)p + 66, 2 * (Py_ssize_t)nlen);
    PyObject *fn = make_tuple(FileNameType, v, 8);
    if (fn == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return fn;
}

static PyObject *
parse_file_name(PyObject *self, PyObject *arg)
{
    Py_buffer in;
    READY();
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *fn = file_name(in.buf, in.len);
    PyBuffer_Release(&in);
    if (fn == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return fn;
}

static PyObject *
parse_entries(PyObject *self, PyObject *args)
{
    Py_buffer in;
    Py_ssize_t start, end;
    READY();
    if (!PyArg_ParseTuple(args, "y*nn", &in, &start, &end))
        return NULL;
    PyObject *out = NULL;
    const uint8_t *buf = in.buf;
    Py_ssize_t pos = start;
    if (end > in.len || start < 0)
        goto fallback;
    /* check first, build after: a bad entry anywhere means the Python twin reports it */
    Py_ssize_t count = 0;
    for (;;) {
        if (pos + 16 > end)
            goto fallback;
        uint16_t length = u16(buf + pos + 8), key_len = u16(buf + pos + 10),
                 flags = u16(buf + pos + 12);
        if (length < 16 || (length & 7) || pos + length > end || 16 + key_len > length)
            goto fallback;
        if (flags & 1) {
            if (length < 24 + ((flags & 2) ? 0 : key_len))
                goto fallback;
            if (i64(buf + pos + length - 8) < 0)
                goto fallback;
        }
        count++;
        if (flags & 2)
            break;
        pos += length;
    }
    out = PyList_New(count);
    if (out == NULL)
        goto error;
    pos = start;
    for (Py_ssize_t k = 0; k < count; k++) {
        const uint8_t *e = buf + pos;
        uint16_t length = u16(e + 8), key_len = u16(e + 10), flags = u16(e + 12);
        PyObject *v[5];
        v[0] = PyLong_FromUnsignedLongLong(u64(e));
        v[1] = PyLong_FromLong(flags);
        v[2] = (flags & 2) ? Py_NewRef(empty_bytes)
                           : PyBytes_FromStringAndSize((const char *)e + 16, key_len);
        v[3] = PyBytes_FromStringAndSize((const char *)e, length);
        v[4] = (flags & 1) ? from_i64(i64(e + length - 8)) : Py_NewRef(Py_None);
        PyObject *entry = make_tuple(IndexEntryType, v, 5);
        if (entry == NULL)
            goto error;
        PyList_SET_ITEM(out, k, entry);
        pos += length;
    }
    PyBuffer_Release(&in);
    return out;
fallback:
    PyBuffer_Release(&in);
    Py_RETURN_NONE;
error:
    Py_XDECREF(out);
    PyBuffer_Release(&in);
    return NULL;
}

/* -- a directory's listing as arrays ------------------------------------------------------- */

/*
 * list_index(root_value, allocation, bitmap, cluster_size, is_root) -> (names, offsets,
 * numbers, sequences, kinds, flags, sizes, allocated, times) | None: ntfs_reader/listing.py's
 * listing_python over a whole $I30 index (the $INDEX_ROOT value, the whole
 * $INDEX_ALLOCATION as bytes or None, its $BITMAP or None), each as the bytes of an array of
 * the twin's typecode: no Python object per entry. Walks the B+tree in Index's order with
 * its checks (fixups, VCN, bitmap, depth, cycles); names as names.from_raw then
 * os.fsencode give them. None for anything bad, and for a name longer than NAME_MAX
 * bytes (its shortened form needs BLAKE2b): the twin answers, or raises the typed error.
 */

enum { L_NAMES, L_OFFSETS, L_NUMBERS, L_SEQS, L_KINDS, L_FLAGS, L_SIZES, L_ALLOCS, L_TIMES,
       L_COUNT };
#define LIST_NAME_MAX 255
#define LIST_MAX_DEPTH 64   /* cache.MAX_INDEX_DEPTH */

struct lister {
    const uint8_t *alloc, *bitmap;
    Py_ssize_t alloc_len, bitmap_len;
    int has_alloc, has_bitmap, root;
    Py_ssize_t block_size, vcn_size, max_vcn;
    uint8_t *visited;
    uint32_t names_len;
    struct bytebuf out[L_COUNT];
};

/* The Linux name (as bytes) of UTF-16LE `raw` of `n` units: generalised UTF-8 (lone
 * surrogates as 3 bytes), '/' -> C0 AF, NUL -> C0 80, "." and ".." -> C0 AE per dot. Returns
 * the length written to `out` (room for 3 * n + 4 bytes). */
static Py_ssize_t
linux_name(const uint8_t *raw, int n, uint8_t *out)
{
    if ((n == 1 || n == 2) && u16(raw) == '.' && (n == 1 || u16(raw + 2) == '.')) {
        for (int i = 0; i < n; i++) {
            out[2 * i] = 0xC0;
            out[2 * i + 1] = 0xAE;
        }
        return 2 * n;
    }
    Py_ssize_t len = 0;
    for (int i = 0; i < n; i++) {
        uint32_t c = u16(raw + 2 * i);
        if (c >= 0xD800 && c < 0xDC00 && i + 1 < n) {
            uint32_t d = u16(raw + 2 * i + 2);
            if (d >= 0xDC00 && d < 0xE000) {
                c = 0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00);
                i++;
            }
        }
        if (c == '/' || c == 0) {
            out[len++] = 0xC0;
            out[len++] = c ? 0xAF : 0x80;
        } else if (c < 0x80) {
            out[len++] = (uint8_t)c;
        } else if (c < 0x800) {
            out[len++] = (uint8_t)(0xC0 | c >> 6);
            out[len++] = (uint8_t)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out[len++] = (uint8_t)(0xE0 | c >> 12);
            out[len++] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
            out[len++] = (uint8_t)(0x80 | (c & 0x3F));
        } else {
            out[len++] = (uint8_t)(0xF0 | c >> 18);
            out[len++] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
            out[len++] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
            out[len++] = (uint8_t)(0x80 | (c & 0x3F));
        }
    }
    return len;
}

/* One listed entry (a non-last index entry): -1 when the twin must report or name it. */
static int
list_emit(struct lister *L, const uint8_t *e, uint16_t key_len)
{
    const uint8_t *key = e + 16;
    if (key_len < 66)
        return -1;
    uint8_t nlen = key[64];
    if (nlen == 0 || 66 + 2 * (Py_ssize_t)nlen > key_len)
        return -1;
    if (key[65] == 2)  /* NS_DOS: the 8.3 alias of a name listed under its long form */
        return 0;
    uint64_t ref = u64(e), num = ref & 0xFFFFFFFFFFFFULL;
    const uint8_t *raw = key + 66;
    if (L->root && ((num < 16 && raw[0] == '$' && raw[1] == 0) || num == 5))
        return 0;   /* metadata files, and the root's own entry */
    uint8_t name[3 * 255 + 8];
    Py_ssize_t len = num == 5 ? 0 : linux_name(raw, nlen, name);  /* Entry.name of the root */
    if (len > LIST_NAME_MAX)
        return -1;  /* shortened with a BLAKE2b digest: the twin names it */
    uint32_t flags = u32(key + 56);
    uint8_t kind = (flags & 0x0400) ? 0 : (flags & 0x10000000) ? 2 : (flags & 0x0004) ? 0 : 1;
    uint16_t seq = (uint16_t)(ref >> 48);
    int64_t size = i64(key + 48), allocated = i64(key + 40);
    uint64_t times[4] = {u64(key + 8), u64(key + 16), u64(key + 24), u64(key + 32)};
    L->names_len += (uint32_t)len;
    if (bb_add(&L->out[L_NAMES], name, len) < 0 ||
        bb_add(&L->out[L_OFFSETS], &L->names_len, 4) < 0 ||
        bb_add(&L->out[L_NUMBERS], &num, 8) < 0 || bb_add(&L->out[L_SEQS], &seq, 2) < 0 ||
        bb_add(&L->out[L_KINDS], &kind, 1) < 0 || bb_add(&L->out[L_FLAGS], &flags, 4) < 0 ||
        bb_add(&L->out[L_SIZES], &size, 8) < 0 ||
        bb_add(&L->out[L_ALLOCS], &allocated, 8) < 0 ||
        bb_add(&L->out[L_TIMES], times, 32) < 0) {
        PyErr_NoMemory();
        return -2;
    }
    return 0;
}

static int list_node(struct lister *L, const uint8_t *buf, Py_ssize_t buf_len, Py_ssize_t start,
                     Py_ssize_t end, int depth);

/* Index._descend then Index.node: the INDX record at `vcn`, walked. */
static int
list_descend(struct lister *L, int64_t vcn, int depth)
{
    if (depth >= LIST_MAX_DEPTH || !L->has_alloc || vcn < 0 || vcn > L->max_vcn)
        return -1;
    if (L->visited[vcn])
        return -1;  /* a cycle */
    L->visited[vcn] = 1;
    Py_ssize_t offset = (Py_ssize_t)vcn * L->vcn_size, block = offset / L->block_size;
    if (L->has_bitmap &&
        (block / 8 >= L->bitmap_len || !(L->bitmap[block / 8] >> (block % 8) & 1)))
        return -1;
    uint8_t *copy = PyMem_Malloc(L->block_size);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -2;
    }
    memcpy(copy, L->alloc + offset, L->block_size);
    int rc = -1;
    if (apply_fixups(copy, L->block_size, "INDX", 512) == 0 && i64(copy + 16) == vcn) {
        Py_ssize_t eo = u32(copy + 24), il = u32(copy + 28);
        if (il <= L->block_size - 24 && eo >= 16)
            rc = list_node(L, copy, L->block_size, 24 + eo, 24 + il, depth + 1);
    }
    PyMem_Free(copy);
    return rc;
}

/* Index._walk over the entries in buf[start:end] (checked first, as parse_entries does). */
static int
list_node(struct lister *L, const uint8_t *buf, Py_ssize_t buf_len, Py_ssize_t start,
          Py_ssize_t end, int depth)
{
    if (end > buf_len || start < 0)
        return -1;
    Py_ssize_t pos = start;
    for (;;) {
        if (pos + 16 > end)
            return -1;
        uint16_t length = u16(buf + pos + 8), key_len = u16(buf + pos + 10),
                 flags = u16(buf + pos + 12);
        if (length < 16 || (length & 7) || pos + length > end || 16 + key_len > length)
            return -1;
        if ((flags & 1) && (length < 24 + ((flags & 2) ? 0 : key_len) ||
                            i64(buf + pos + length - 8) < 0))
            return -1;
        if (flags & 2)
            break;
        pos += length;
    }
    for (pos = start;;) {
        const uint8_t *e = buf + pos;
        uint16_t length = u16(e + 8), key_len = u16(e + 10), flags = u16(e + 12);
        int rc;
        if ((flags & 1) && (rc = list_descend(L, i64(e + length - 8), depth)) < 0)
            return rc;
        if (flags & 2)
            return 0;
        if ((rc = list_emit(L, e, key_len)) < 0)
            return rc;
        pos += length;
    }
}

static PyObject *
list_index(PyObject *self, PyObject *args)
{
    Py_buffer root, alloc = {0}, bitmap = {0};
    PyObject *alloc_obj, *bitmap_obj;
    Py_ssize_t cluster_size;
    int is_root;
    if (!PyArg_ParseTuple(args, "y*OOnp", &root, &alloc_obj, &bitmap_obj, &cluster_size,
                          &is_root))
        return NULL;
    struct lister L;
    memset(&L, 0, sizeof L);
    PyObject *result = NULL;
    if (alloc_obj != Py_None) {
        if (PyObject_GetBuffer(alloc_obj, &alloc, PyBUF_SIMPLE) < 0)
            goto done;
        L.has_alloc = 1;
    }
    if (bitmap_obj != Py_None) {
        if (PyObject_GetBuffer(bitmap_obj, &bitmap, PyBUF_SIMPLE) < 0)
            goto done;
        L.has_bitmap = 1;
    }
    const uint8_t *r = root.buf;
    if (root.len < 32 || cluster_size <= 0)
        goto fallback;
    L.block_size = u32(r + 8);
    if (L.block_size < 256 || L.block_size > 65536 || (L.block_size & (L.block_size - 1)))
        goto fallback;
    L.vcn_size = cluster_size <= L.block_size ? cluster_size : 512;
    L.alloc = alloc.buf;
    L.alloc_len = L.has_alloc ? alloc.len : 0;
    L.bitmap = bitmap.buf;
    L.bitmap_len = L.has_bitmap ? bitmap.len : 0;
    L.root = is_root;
    L.max_vcn = L.alloc_len >= L.block_size ? (L.alloc_len - L.block_size) / L.vcn_size : -1;
    L.visited = PyMem_Calloc(L.max_vcn + 2, 1);
    if (L.visited == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (bb_add(&L.out[L_OFFSETS], &L.names_len, 4) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    int rc = list_node(&L, r, root.len, 16 + (Py_ssize_t)u32(r + 16),
                       16 + (Py_ssize_t)u32(r + 20), 0);
    if (rc == -2)
        goto done;
    if (rc < 0)
        goto fallback;
    result = PyTuple_New(L_COUNT);
    if (result == NULL)
        goto done;
    for (int i = 0; i < L_COUNT; i++) {
        PyObject *b = PyBytes_FromStringAndSize(L.out[i].p ? (const char *)L.out[i].p : "",
                                                (Py_ssize_t)L.out[i].len);
        if (b == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, i, b);
    }
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < L_COUNT; i++)
        PyMem_Free(L.out[i].p);
    PyMem_Free(L.visited);
    if (L.has_alloc)
        PyBuffer_Release(&alloc);
    if (L.has_bitmap)
        PyBuffer_Release(&bitmap);
    PyBuffer_Release(&root);
    return result;
}

/* -- a directory's plain files for a restore ------------------------------------------------ */

enum { PLAIN_NO = 0, PLAIN_BYTES = 1, PLAIN_VOLUME = 2 };

/* The whole runlist at [pos, end) checked as decode_runlist checks it (plus the header's
 * highest VCN, as Attribute.decode_runs does); *first_lcn / *first_len: the first run after
 * joining runs that continue each other on disk (coalesce), first_lcn -1 when sparse or
 * there is none. -1 for a runlist the Python path refuses or that leaves 64 bits. */
static int
first_run(const uint8_t *data, Py_ssize_t pos, Py_ssize_t end, int64_t highest,
          long long total, long long *first_lcn, long long *first_len)
{
    long long vcn = 0, lcn = 0;
    int joined = 1, any = 0;
    *first_lcn = -1;
    *first_len = 0;
    while (pos < end) {
        uint8_t header = data[pos];
        if (header == 0) {
            if (any && highest >= 0 && vcn - 1 < highest)
                return -1;   /* runlist ends before the header's highest VCN */
            return 0;
        }
        int len_size = header & 0x0F, off_size = header >> 4;
        Py_ssize_t start = pos + 1, mid = start + len_size, nxt = mid + off_size;
        if (len_size == 0 || len_size > 8 || off_size > 8 || nxt > end)
            return -1;
        uint64_t ul = 0;
        for (int i = len_size - 1; i >= 0; i--)
            ul = ul << 8 | data[start + i];
        if (len_size < 8 && (data[start + len_size - 1] & 0x80))
            ul |= ~(uint64_t)0 << (8 * len_size);
        long long length = (long long)ul, run_lcn = -1;
        if (length <= 0)
            return -1;
        if (off_size) {
            uint64_t ud = 0;
            for (int i = off_size - 1; i >= 0; i--)
                ud = ud << 8 | data[mid + i];
            if (off_size < 8 && (data[mid + off_size - 1] & 0x80))
                ud |= ~(uint64_t)0 << (8 * off_size);
            long long sum, last;
            if (__builtin_add_overflow(lcn, (long long)ud, &sum))
                return -1;
            lcn = sum;
            if (lcn < 0 || __builtin_add_overflow(lcn, length, &last) || last > total)
                return -1;
            run_lcn = lcn;
        }
        if (!any) {
            *first_lcn = run_lcn;
            *first_len = length;
        } else if (joined) {
            /* joins the first run when it continues it on disk (or both are sparse) */
            if ((*first_lcn < 0 && run_lcn < 0) ||
                (*first_lcn >= 0 && run_lcn >= 0 && *first_lcn + *first_len == run_lcn))
                *first_len += length;
            else
                joined = 0;
        }
        any = 1;
        if (__builtin_add_overflow(vcn, length, &vcn))
            return -1;
        pos = nxt;
    }
    return -1;   /* not terminated */
}

/* What restore needs of record `buf` (fixups applied by check_record): PLAIN_BYTES with the
 * resident value (*at: its offset in buf), PLAIN_VOLUME with the volume byte offset, or
 * PLAIN_NO for everything the node path must handle. The twin: listing.plain_file_python. */
static int
plain_file(uint8_t *buf, Py_ssize_t size, long long number, int sequence, long long cluster,
           long long total, long long max_size, long long *fsize, long long *at,
           long long times[2])
{
    Py_ssize_t in_use, pos, n, found = -1;
    if (check_record(buf, size, number, &in_use, &pos, &n) < 0 || u64(buf + 0x20) != 0)
        return PLAIN_NO;
    uint16_t rflags = u16(buf + 0x16);
    if ((rflags & 0x3) != 0x1 || (sequence && u16(buf + 0x10) != sequence))
        return PLAIN_NO;   /* not in use, a directory, or a stale reference */
    const uint8_t *si = NULL;
    int si_seen = 0;
    long nondos = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        const uint8_t *a = buf + pos;
        uint32_t atype = u32(a), alen = u32(a + 4);
        uint8_t nonres = a[8], name_len = a[9];
        if (atype == 0x20 || atype == 0xC0)
            return PLAIN_NO;
        if (atype == 0x10 && !si_seen) {
            si_seen = 1;
            if (name_len || nonres || u32(a + 16) < 48)
                return PLAIN_NO;
            si = a + u16(a + 20);
        } else if (atype == 0x30 && !nonres) {
            uint32_t vlen = u32(a + 16);
            const uint8_t *v = a + u16(a + 20);
            if (vlen < 66 || v[64] == 0 || 66 + 2 * (uint32_t)v[64] > vlen)
                return PLAIN_NO;
            if (v[65] != 2)
                nondos++;
        } else if (atype == 0x80 && name_len == 0) {
            if (found >= 0)
                return PLAIN_NO;
            found = pos;
        }
        pos += alen;
    }
    if (si == NULL || found < 0 || nondos > 1)
        return PLAIN_NO;
    uint32_t fattr = u32(si + 32);
    if ((fattr & 0x4) && !(rflags & 0x2))
        return PLAIN_NO;   /* a possible Interix symlink */
    if (fattr & 0x4000)
        return PLAIN_NO;   /* EFS-encrypted */
    for (int t = 0; t < 2; t++) {   /* accessed, modified: ns since 1970, in 64 bits */
        uint64_t ticks = u64(si + (t ? 8 : 24));
        long long ns;
        if (ticks > (uint64_t)INT64_MAX ||
            __builtin_mul_overflow((long long)ticks - 116444736000000000LL, 100LL, &ns))
            return PLAIN_NO;
        times[t] = ns;
    }
    const uint8_t *a = buf + found;
    uint16_t aflags = u16(a + 12);
    if (aflags & 0x4000)
        return PLAIN_NO;
    if (!a[8]) {
        uint32_t vlen = u32(a + 16);
        if (vlen > max_size)
            return PLAIN_NO;
        *fsize = vlen;
        *at = found + u16(a + 20);
        return PLAIN_BYTES;
    }
    int64_t low = i64(a + 16), high = i64(a + 24), dsize = i64(a + 48), isize = i64(a + 56);
    if (low != 0 || dsize > max_size || ((aflags & 0x1) && a[34]))
        return PLAIN_NO;   /* not the first extent, too big, or LZNT1-compressed */
    long long lcn, len;
    if (first_run(buf, found + u16(a + 32), found + u32(a + 4), high, total, &lcn, &len) < 0)
        return PLAIN_NO;
    *fsize = dsize;
    *at = 0;
    if (dsize == 0)
        return PLAIN_BYTES;
    if (isize < dsize || lcn < 0 || dsize > len * cluster)   /* holes, zeros, gaps */
        return PLAIN_NO;
    long long off;
    if (__builtin_mul_overflow(lcn, cluster, &off))
        return PLAIN_NO;
    *at = off;
    return PLAIN_VOLUME;
}

/*
 * plain_files(blocks, block_size, record_size, records, numbers, sequences, cluster_size,
 *             total_clusters, max_size) -> (status, sizes, at, times, data): for each child of
 * a listing (its MFT record number and the index's sequence: array('Q'), array('H')), what a
 * restore needs to write it without a node, as bytes: status (1 byte each: 0 the node path,
 * 1 its bytes are in `data` at at[i], 2 they are on the volume at byte at[i]), sizes and at
 * (int64 each), times ((atime, mtime) ns since 1970, int64 pairs), data (the resident values,
 * one after the other). `blocks` maps block number -> the $MFT's bytes from block * block_size
 * (a missing block: the node path); `records`: how many records $MFT holds. Status 0 for a
 * record that is damaged, stale, in use as anything but a plain file with one name, with
 * an attribute list, reparse point, encryption, compression, a hole, bytes past its valid
 * data length, or more than max_size bytes. The twin is listing.plain_files_python.
 */
static PyObject *
plain_files(PyObject *self, PyObject *args)
{
    PyObject *blocks, *result = NULL, *key = NULL;
    Py_ssize_t block_size, record_size;
    long long records, cluster, total, max_size;
    Py_buffer nums, seqs;
    if (!PyArg_ParseTuple(args, "O!nnLy*y*LLL", &PyDict_Type, &blocks, &block_size,
                          &record_size, &records, &nums, &seqs, &cluster, &total, &max_size))
        return NULL;
    Py_ssize_t count = nums.len / 8;
    uint8_t *buf = NULL, *status = NULL;
    long long *fsizes = NULL, *ats = NULL, *times = NULL;
    char *data = NULL;
    Py_ssize_t data_len = 0, data_cap = 0;
    if (nums.len % 8 || seqs.len != count * 2 || record_size < 0x30 || record_size > (1 << 20) ||
        block_size < record_size || block_size % record_size || cluster <= 0) {
        PyErr_SetString(PyExc_ValueError, "plain_files: arrays or sizes do not fit");
        goto done;
    }
    buf = PyMem_Malloc(record_size);
    status = PyMem_Calloc(count ? count : 1, 1);
    fsizes = PyMem_Calloc(count ? count : 1, 8);
    ats = PyMem_Calloc(count ? count : 1, 8);
    times = PyMem_Calloc(count ? 2 * count : 1, 8);
    if (!buf || !status || !fsizes || !ats || !times) {
        PyErr_NoMemory();
        goto done;
    }
    long long per = block_size / record_size, have_no = -1;
    Py_buffer block = {0};
    int have = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t number;
        uint16_t seq;
        memcpy(&number, (const char *)nums.buf + 8 * i, 8);
        memcpy(&seq, (const char *)seqs.buf + 2 * i, 2);
        if (number >= (uint64_t)records)
            continue;
        long long no = (long long)number / per;
        if (no != have_no) {
            if (have)
                PyBuffer_Release(&block);
            have = 0;
            have_no = no;
            Py_XSETREF(key, PyLong_FromLongLong(no));
            if (!key)
                goto done;
            PyObject *b = PyDict_GetItemWithError(blocks, key);
            if (b == NULL && PyErr_Occurred())
                goto done;
            if (b != NULL && b != Py_None) {
                if (PyObject_GetBuffer(b, &block, PyBUF_SIMPLE) < 0)
                    goto done;
                have = 1;
            }
        }
        Py_ssize_t at = ((long long)number % per) * record_size;
        if (!have || at + record_size > block.len)
            continue;
        memcpy(buf, (const char *)block.buf + at, record_size);
        long long fsize = 0, where = 0;
        int st = plain_file(buf, record_size, (long long)number, seq, cluster, total, max_size,
                            &fsize, &where, &times[2 * i]);
        if (st == PLAIN_BYTES && fsize) {
            if (data_len + fsize > data_cap) {
                Py_ssize_t cap = data_cap ? data_cap : 65536;
                while (cap < data_len + fsize)
                    cap *= 2;
                char *p = PyMem_Realloc(data, cap);
                if (!p) {
                    PyBuffer_Release(&block);
                    PyErr_NoMemory();
                    goto done;
                }
                data = p;
                data_cap = cap;
            }
            memcpy(data + data_len, buf + where, fsize);
            where = data_len;
            data_len += fsize;
        } else if (st == PLAIN_BYTES) {
            where = 0;   /* empty: no bytes */
        }
        status[i] = (uint8_t)st;
        fsizes[i] = st ? fsize : 0;
        ats[i] = st ? where : 0;
        if (!st)
            times[2 * i] = times[2 * i + 1] = 0;
    }
    if (have)
        PyBuffer_Release(&block);
    result = Py_BuildValue("(y#y#y#y#y#)", (const char *)status, count, (const char *)fsizes,
                           count * 8, (const char *)ats, count * 8, (const char *)times,
                           count * 16, data ? data : "", data_len);
done:
    Py_XDECREF(key);
    PyMem_Free(buf);
    PyMem_Free(status);
    PyMem_Free(fsizes);
    PyMem_Free(ats);
    PyMem_Free(times);
    PyMem_Free(data);
    PyBuffer_Release(&nums);
    PyBuffer_Release(&seqs);
    return result;
}

/* -- module --------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(Attribute, MftRecord, IndexEntry, FileName, Times)"},
    {"fixups", fixups, METH_VARARGS,
     "fixups(buf, magic, stride) -> True, or None (buf untouched) when the twin must report"},
    {"parse_record", parse_record, METH_VARARGS,
     "parse_record(data, number, offset) -> MftRecord, or None: run the Python twin"},
    {"record_summary", record_summary, METH_VARARGS,
     "record_summary(data, number) -> what the metadata index keeps of a record, or None"},
    {"stat_summary", stat_summary, METH_VARARGS,
     "stat_summary(data, number) -> what a stat of a plain file or directory needs, or None"},
    {"data_attribute", data_attribute, METH_VARARGS,
     "data_attribute(data, number, offset) -> (sequence, flags, file attributes, Attribute) of"
     " a plain file's unnamed $DATA, or None"},
    {"decode_runlist", decode_runlist, METH_VARARGS,
     "decode_runlist(data, pos, end, first_vcn, total_clusters) -> runs, or None"},
    {"parse_entries", parse_entries, METH_VARARGS,
     "parse_entries(buf, start, end) -> [IndexEntry], or None"},
    {"parse_file_name", parse_file_name, METH_O, "parse_file_name(value) -> FileName, or None"},
    {"plain_files", plain_files, METH_VARARGS,
     "plain_files(blocks, block_size, record_size, records, numbers, sequences, cluster_size,"
     " total_clusters, max_size) -> (status, sizes, at, times, data) as bytes"},
    {"list_index", list_index, METH_VARARGS,
     "list_index(root_value, allocation, bitmap, cluster_size, is_root) -> arrays as bytes, "
     "or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ntfsparse",
    "MFT records, mapping pairs, $FILE_NAME and index entries in C (Python twins in "
    "record.py, runlist.py, attrs.py, index.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__ntfsparse(void)
{
    empty_str = PyUnicode_FromString("");
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    small_zero = PyLong_FromLong(0);
    if (empty_str == NULL || empty_bytes == NULL || small_zero == NULL)
        return NULL;
    return PyModule_Create(&module);
}
