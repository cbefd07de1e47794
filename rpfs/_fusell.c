/* rpfs._fusell: a small binding of libfuse3's low-level API for rpfs's read-only mount.

   Why our own: the low-level API hands read() and readdir() the inode, so rpfs can answer
   OPEN with ENOSYS (the kernel then sends no OPEN or RELEASE and keeps file data cached), and
   it lets an OPENDIR reply ask the kernel to cache the listing (cache_readdir).

   Shape: ``Session(mountpoint, options)`` creates and mounts a session; Python waits for
   ``fd`` to be readable and calls ``process()``, which reads one request from /dev/fuse and
   returns it as a tuple ``(opcode, request, inode, ...)`` (None for nothing, or after an
   unmount: then ``exited`` is true). FORGET is answered here (it has no reply); every other
   request is answered exactly once by one of the ``reply_*`` functions, which take the
   request (a ``Request``) and plain values. A ``Request`` lets go of libfuse's handle when
   it is answered: a second reply is a ValueError, never a use after free (and one dropped
   unanswered is answered EIO, so no caller waits forever).

   ``EntryAttributes`` is a C struct with named members: a readdirplus reply copies it into
   the buffer without looking anything up by name.

   Fast paths (what is already known never reaches Python): an ``AttrTable`` given to the
   session with ``serve_from`` holds the complete attributes already sent for immutable
   inodes, so GETATTR of one is answered here; it also knows which extended attribute names
   an inode can have at all (``xattr_class``), so GETXATTR of any other name (``ls -l`` asks
   ``security.selinux`` and ``system.posix_acl_access`` of every file) is ENODATA here, and
   LISTXATTR of an inode that has none is answered empty. ``fill_numbered`` builds a whole
   READDIRPLUS reply from a listing's arrays in one call. ``counts()`` says how many
   requests of each opcode came and how many went to Python (tests count them). */

#define PY_SSIZE_T_CLEAN
#define FUSE_USE_VERSION 34
#include <Python.h>
#include <structmember.h>
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <stdint.h>
#include <pthread.h>
#include <linux/fuse.h>

enum {
    OP_LOOKUP = 1, OP_FORGET = 2, OP_GETATTR = 3, OP_READLINK = 5, OP_READ = 15,
    OP_STATFS = 17, OP_GETXATTR = 22, OP_LISTXATTR = 23, OP_OPENDIR = 27, OP_READDIR = 28,
    OP_RELEASEDIR = 29, OP_INIT = 26, OP_OPEN = 14,
    N_OPS = 64,
};

/* requests of each opcode received, and handed to Python (module-wide: one session) */
static unsigned long long n_received[N_OPS], n_python[N_OPS];
#define COUNT(op) (n_received[(op)]++)

#define NUMBERED (1ULL << 63)   /* inode numbers: NUMBERED | slot << SLOT_SHIFT | record */
#define SLOT_SHIFT 48
#define MAX_SLOTS (1 << (63 - SLOT_SHIFT))

/* -- EntryAttributes ------------------------------------------------------------------ */

typedef struct {
    unsigned long long st_ino, generation, st_nlink, st_rdev, st_blksize;
    long long st_size, st_blocks, st_atime_ns, st_mtime_ns, st_ctime_ns;
    unsigned int st_mode, st_uid, st_gid;
    double entry_timeout, attr_timeout;
} AttrData;

typedef struct {
    PyObject_HEAD
    AttrData d;
} Attrs;

#define M(name, type) {#name, type, offsetof(Attrs, d.name), 0, NULL}
static PyMemberDef attrs_members[] = {
    M(st_ino, T_ULONGLONG), M(generation, T_ULONGLONG), M(st_nlink, T_ULONGLONG),
    M(st_rdev, T_ULONGLONG), M(st_blksize, T_ULONGLONG), M(st_size, T_LONGLONG),
    M(st_blocks, T_LONGLONG), M(st_atime_ns, T_LONGLONG), M(st_mtime_ns, T_LONGLONG),
    M(st_ctime_ns, T_LONGLONG), M(st_mode, T_UINT), M(st_uid, T_UINT), M(st_gid, T_UINT),
    M(entry_timeout, T_DOUBLE), M(attr_timeout, T_DOUBLE), {NULL}};
#undef M

static PyTypeObject AttrsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._fusell.EntryAttributes",
    .tp_doc = "What the kernel is told about an inode (zeroed when made).",
    .tp_basicsize = sizeof(Attrs),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_members = attrs_members,
};

static void to_stat(const AttrData *a, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = a->st_ino;
    st->st_mode = a->st_mode;
    st->st_nlink = a->st_nlink;
    st->st_uid = a->st_uid;
    st->st_gid = a->st_gid;
    st->st_rdev = a->st_rdev;
    st->st_size = a->st_size;
    st->st_blksize = a->st_blksize;
    st->st_blocks = a->st_blocks;
    /* floor division: times before 1970 keep a non-negative nanosecond part */
#define TS(field, ns) do { long long s = (ns) / 1000000000LL, r = (ns) % 1000000000LL; \
        if (r < 0) { r += 1000000000LL; s -= 1; } st->field.tv_sec = s; st->field.tv_nsec = r; } while (0)
    TS(st_atim, a->st_atime_ns);
    TS(st_mtim, a->st_mtime_ns);
    TS(st_ctim, a->st_ctime_ns);
#undef TS
}

static void data_to_entry(const AttrData *a, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = a->st_ino;
    e->generation = a->generation;
    e->attr_timeout = a->attr_timeout;
    e->entry_timeout = a->entry_timeout;
    to_stat(a, &e->attr);
}

static int to_entry(PyObject *o, struct fuse_entry_param *e)
{
    if (!PyObject_TypeCheck(o, &AttrsType)) {
        PyErr_SetString(PyExc_TypeError, "EntryAttributes expected");
        return -1;
    }
    data_to_entry(&((const Attrs *)o)->d, e);
    return 0;
}

/* -- AttrTable: attributes already sent, by inode ------------------------------------- */

/* A bounded, set-associative table (WAYS slots per bucket; a full bucket gives up its
   least recently used slot): no allocation per entry, a miss only costs a trip to Python.
   Besides attributes it knows each inode's xattr class: which names it can have at all. */

#define WAYS 8
#define MAX_CLASSES 16     /* xattr classes; 0: unknown (Python decides) */
#define MAX_CLASS_NAMES 32

typedef struct {
    AttrData d;
    unsigned long long used;   /* the table's clock when last put or found; 0: empty */
    unsigned char xclass;
} Slot;

typedef struct {
    int n_prefixes, n_names;
    char *prefixes[MAX_CLASS_NAMES], *names[MAX_CLASS_NAMES];
} XattrClass;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t buckets;            /* a power of two */
    size_t count;
    unsigned long long clock;
    pthread_mutex_t lock;      /* callbacks may one day run without the GIL */
    int n_classes;
    XattrClass classes[MAX_CLASSES];
    unsigned char volume_class[MAX_SLOTS];   /* xattr class of each volume's numbered inodes */
} AttrTable;

static PyTypeObject AttrTableType;

static size_t bucket_of(const AttrTable *t, unsigned long long ino)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ULL) >> 17) & (t->buckets - 1);
}

/* the slot holding ino, or NULL (lock held) */
static Slot *table_find(AttrTable *t, unsigned long long ino)
{
    Slot *b = t->slots + bucket_of(t, ino) * WAYS;
    for (int i = 0; i < WAYS; i++)
        if (b[i].used && b[i].d.st_ino == ino)
            return &b[i];
    return NULL;
}

/* copies ino's attributes (and xattr class) out; 0 when not there */
static int table_get(AttrTable *t, unsigned long long ino, AttrData *out, int *xclass)
{
    pthread_mutex_lock(&t->lock);
    Slot *sl = table_find(t, ino);
    if (sl != NULL) {
        sl->used = ++t->clock;
        if (out != NULL)
            *out = sl->d;
        if (xclass != NULL)
            *xclass = sl->xclass;
    }
    pthread_mutex_unlock(&t->lock);
    return sl != NULL;
}

static int table_init(AttrTable *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"capacity", NULL};
    Py_ssize_t capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n", names, &capacity))
        return -1;
    if (capacity < 1 || capacity > (1 << 26)) {
        PyErr_SetString(PyExc_ValueError, "capacity must be 1 .. 2**26");
        return -1;
    }
    if (self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "table already made");
        return -1;
    }
    size_t buckets = 1;
    while (buckets * WAYS < (size_t)capacity)
        buckets <<= 1;
    self->slots = calloc(buckets * WAYS, sizeof(Slot));
    if (self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buckets = buckets;
    self->n_classes = 1;   /* 0: unknown */
    pthread_mutex_init(&self->lock, NULL);
    return 0;
}

static void table_dealloc(AttrTable *self)
{
    if (self->slots != NULL)
        pthread_mutex_destroy(&self->lock);
    free(self->slots);
    for (int c = 0; c < self->n_classes; c++) {
        for (int i = 0; i < self->classes[c].n_prefixes; i++)
            free(self->classes[c].prefixes[i]);
        for (int i = 0; i < self->classes[c].n_names; i++)
            free(self->classes[c].names[i]);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int table_ready(AttrTable *t)
{
    if (t->slots == NULL) {
        PyErr_SetString(PyExc_ValueError, "table not initialised");
        return 0;
    }
    return 1;
}

static PyObject *table_put(AttrTable *self, PyObject *args)
{
    PyObject *a;
    int xclass = 0;
    if (!PyArg_ParseTuple(args, "O!|i", &AttrsType, &a, &xclass) || !table_ready(self))
        return NULL;
    if (xclass < 0 || xclass >= self->n_classes) {
        PyErr_SetString(PyExc_ValueError, "no such xattr class");
        return NULL;
    }
    const AttrData *d = &((Attrs *)a)->d;
    if (d->st_ino == 0) {
        PyErr_SetString(PyExc_ValueError, "inode 0");
        return NULL;
    }
    pthread_mutex_lock(&self->lock);
    Slot *sl = table_find(self, d->st_ino);
    if (sl == NULL) {
        Slot *b = self->slots + bucket_of(self, d->st_ino) * WAYS;
        sl = &b[0];
        for (int i = 1; i < WAYS && sl->used; i++)
            if (b[i].used < sl->used)
                sl = &b[i];
        if (!sl->used)
            self->count++;
    }
    sl->d = *d;
    sl->xclass = (unsigned char)xclass;
    sl->used = ++self->clock;
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *table_get_py(AttrTable *self, PyObject *arg)
{
    unsigned long long ino = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || !table_ready(self))
        return NULL;
    Attrs *a = PyObject_New(Attrs, &AttrsType);
    if (a == NULL)
        return NULL;
    if (!table_get(self, ino, &a->d, NULL)) {
        Py_DECREF(a);
        Py_RETURN_NONE;
    }
    return (PyObject *)a;
}

static PyObject *table_pop(AttrTable *self, PyObject *arg)
{
    unsigned long long ino = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || !table_ready(self))
        return NULL;
    pthread_mutex_lock(&self->lock);
    Slot *sl = table_find(self, ino);
    if (sl != NULL) {
        memset(sl, 0, sizeof *sl);
        self->count--;
    }
    pthread_mutex_unlock(&self->lock);
    return PyBool_FromLong(sl != NULL);
}

static PyObject *table_clear(AttrTable *self, PyObject *unused)
{
    (void)unused;
    if (!table_ready(self))
        return NULL;
    pthread_mutex_lock(&self->lock);
    memset(self->slots, 0, self->buckets * WAYS * sizeof(Slot));
    self->count = 0;
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static Py_ssize_t table_len(AttrTable *self)
{
    return (Py_ssize_t)self->count;
}

static int table_contains(AttrTable *self, PyObject *arg)
{
    unsigned long long ino = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || !table_ready(self))
        return -1;
    return table_get(self, ino, NULL, NULL);
}

/* copies a sequence of bytes into a class's name list */
static int class_names(PyObject *seq_obj, char **out, int *n)
{
    PyObject *seq = PySequence_Fast(seq_obj, "a sequence of bytes expected");
    if (seq == NULL)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    if (len > MAX_CLASS_NAMES) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many names in an xattr class");
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(b) || strlen(PyBytes_AS_STRING(b)) != (size_t)PyBytes_GET_SIZE(b)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "xattr names are bytes without NUL");
            return -1;
        }
        out[*n] = strdup(PyBytes_AS_STRING(b));
        if (out[*n] == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        (*n)++;
    }
    Py_DECREF(seq);
    return 0;
}

static PyObject *table_xattr_class(AttrTable *self, PyObject *args)
{
    PyObject *prefixes, *names;
    if (!PyArg_ParseTuple(args, "OO", &prefixes, &names) || !table_ready(self))
        return NULL;
    if (self->n_classes >= MAX_CLASSES) {
        PyErr_SetString(PyExc_ValueError, "too many xattr classes");
        return NULL;
    }
    XattrClass *c = &self->classes[self->n_classes];
    memset(c, 0, sizeof *c);
    if (class_names(prefixes, c->prefixes, &c->n_prefixes) < 0 ||
        class_names(names, c->names, &c->n_names) < 0) {
        for (int i = 0; i < c->n_prefixes; i++)
            free(c->prefixes[i]);
        for (int i = 0; i < c->n_names; i++)
            free(c->names[i]);
        memset(c, 0, sizeof *c);
        return NULL;
    }
    return PyLong_FromLong(self->n_classes++);
}

static PyObject *table_set_volume_class(AttrTable *self, PyObject *args)
{
    int slot, xclass;
    if (!PyArg_ParseTuple(args, "ii", &slot, &xclass) || !table_ready(self))
        return NULL;
    if (slot < 0 || slot >= MAX_SLOTS || xclass < 0 || xclass >= self->n_classes) {
        PyErr_SetString(PyExc_ValueError, "bad slot or xattr class");
        return NULL;
    }
    self->volume_class[slot] = (unsigned char)xclass;
    Py_RETURN_NONE;
}

/* the xattr class of ino: of its volume for a numbered inode, else of its table entry */
static int class_of(AttrTable *t, unsigned long long ino)
{
    if (ino & NUMBERED)
        return t->volume_class[(ino ^ NUMBERED) >> SLOT_SHIFT];
    int c = 0;
    return table_get(t, ino, NULL, &c) ? c : 0;
}

/* whether an inode of class c may have an xattr called name (c != 0) */
static int class_allows(const XattrClass *c, const char *name)
{
    for (int i = 0; i < c->n_prefixes; i++)
        if (strncmp(name, c->prefixes[i], strlen(c->prefixes[i])) == 0)
            return 1;
    for (int i = 0; i < c->n_names; i++)
        if (strcmp(name, c->names[i]) == 0)
            return 1;
    return 0;
}

static PyObject *table_may_have(AttrTable *self, PyObject *args)
{
    unsigned long long ino;
    const char *name;
    if (!PyArg_ParseTuple(args, "Ky", &ino, &name) || !table_ready(self))
        return NULL;
    int c = class_of(self, ino);
    if (c == 0)
        Py_RETURN_NONE;
    return PyBool_FromLong(class_allows(&self->classes[c], name));
}

static PyMethodDef table_methods[] = {
    {"put", (PyCFunction)table_put, METH_VARARGS,
     "put(attrs, xattr_class=0): keep attrs under attrs.st_ino (a full bucket forgets its "
     "least recently used)."},
    {"get", (PyCFunction)table_get_py, METH_O, "get(inode) -> EntryAttributes (a copy) or None"},
    {"pop", (PyCFunction)table_pop, METH_O, "pop(inode) -> whether it was there"},
    {"clear", (PyCFunction)table_clear, METH_NOARGS, "Forget everything (not the classes)."},
    {"xattr_class", (PyCFunction)table_xattr_class, METH_VARARGS,
     "xattr_class(prefixes, names) -> class: the xattr names an inode of it can have at all"},
    {"set_volume_class", (PyCFunction)table_set_volume_class, METH_VARARGS,
     "set_volume_class(slot, class): the class of every numbered inode of that slot"},
    {"may_have", (PyCFunction)table_may_have, METH_VARARGS,
     "may_have(inode, name) -> True/False by its class, None when its class is unknown"},
    {NULL}};

static PySequenceMethods table_as_sequence = {
    .sq_length = (lenfunc)table_len,
    .sq_contains = (objobjproc)table_contains,
};

static PyTypeObject AttrTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._fusell.AttrTable",
    .tp_doc = "AttrTable(capacity): complete attributes already sent for immutable inodes "
              "(what the session answers GETATTR from), and each inode's xattr class.",
    .tp_basicsize = sizeof(AttrTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)table_init,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_as_sequence = &table_as_sequence,
};

/* -- Session -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    struct fuse_session *se;
    struct fuse_buf buf;
    PyObject *request;     /* what the last process() call produced (owned), or NULL */
    AttrTable *table;      /* serve_from(): what is answered without Python, or NULL */
    int mounted;
} Session;

static PyTypeObject SessionType;

/* -- Request: one request's handle, let go of when answered ----------------------------- */

typedef struct {
    PyObject_HEAD
    fuse_req_t req;        /* NULL once answered */
    Session *session;      /* owned: a reply after close() must not touch libfuse */
} Request;

static PyTypeObject RequestType;

static PyObject *request_new(fuse_req_t req)
{
    Request *r = PyObject_New(Request, &RequestType);
    if (r == NULL)
        return NULL;
    r->req = req;
    r->session = fuse_req_userdata(req);
    Py_INCREF(r->session);
    return (PyObject *)r;
}

/* the handle to answer with, taken (the Request is answered from here on); NULL + error */
static fuse_req_t req_take(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &RequestType)) {
        PyErr_SetString(PyExc_TypeError, "a Request expected (FORGET and INIT get no answer)");
        return NULL;
    }
    Request *r = (Request *)o;
    fuse_req_t req = r->req;
    if (req == NULL) {
        PyErr_SetString(PyExc_ValueError, "request already answered");
        return NULL;
    }
    r->req = NULL;
    if (r->session->se == NULL) {
        PyErr_SetString(PyExc_ValueError, "session is closed");
        return NULL;
    }
    return req;
}

static void request_dealloc(Request *self)
{
    /* dropped unanswered (a bug): answer EIO rather than leave the caller waiting */
    if (self->req != NULL && self->session->se != NULL)
        fuse_reply_err(self->req, EIO);
    Py_DECREF(self->session);
    PyObject_Free(self);
}

static int request_bool(Request *self)
{
    return self->req != NULL;
}

static PyObject *request_repr(Request *self)
{
    return PyUnicode_FromFormat("<Request %s>", self->req ? "unanswered" : "answered");
}

static PyNumberMethods request_as_number = {.nb_bool = (inquiry)request_bool};

static PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._fusell.Request",
    .tp_doc = "One request to answer with a reply_* function, once (false once answered).",
    .tp_basicsize = sizeof(Request),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)request_dealloc,
    .tp_repr = (reprfunc)request_repr,
    .tp_as_number = &request_as_number,
};

/* Hands request op (tuple t holding Request r) to Python; a tuple that could not be made
   leaves r to its dealloc, which answers EIO. */
static void post(PyObject *r, int op, PyObject *t)
{
    Session *s = ((Request *)r)->session;
    if (t == NULL) {
        PyErr_Clear();
    } else {
        n_python[op]++;
        Py_XSETREF(s->request, t);
    }
    Py_DECREF(r);
}

/* POST(op, format of the values after the request, values...) from a callback of req */
#define POST(op, fmt, ...) do {                                                         \
        PyObject *r_ = request_new(req);                                                \
        if (r_ == NULL) {                                                               \
            PyErr_Clear();                                                              \
            fuse_reply_err(req, ENOMEM);                                                \
            return;                                                                     \
        }                                                                               \
        post(r_, (op), Py_BuildValue("(iO" fmt ")", (op), r_, __VA_ARGS__));            \
    } while (0)

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
    Session *s = userdata;
    unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_NO_OPEN_SUPPORT;
#ifdef FUSE_CAP_CACHE_SYMLINKS
    want |= FUSE_CAP_CACHE_SYMLINKS;
#endif
    conn->want |= want & conn->capable;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;  /* plus every time: the kernel caches entries */
    /* Python hears of INIT after its reply is written (what runs then may touch the mount) */
    COUNT(OP_INIT);
    PyObject *t = Py_BuildValue("(iiK)", OP_INIT, 0, 0ULL);
    if (t == NULL) {
        PyErr_Clear();
    } else {
        n_python[OP_INIT]++;
        Py_XSETREF(s->request, t);
    }
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    COUNT(OP_LOOKUP);
    POST(OP_LOOKUP, "Ky", (unsigned long long)parent, name);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
    Session *s = fuse_req_userdata(req);
    COUNT(OP_FORGET);
    PyObject *t = Py_BuildValue("(iiK[(KK)])", OP_FORGET, 0, 0ULL, (unsigned long long)ino,
                                (unsigned long long)n);
    fuse_reply_none(req);   /* frees req */
    if (t == NULL) {
        PyErr_Clear();   /* the count stays high: the inode is kept, never wrong */
        return;
    }
    n_python[OP_FORGET]++;
    Py_XSETREF(s->request, t);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *fd)
{
    Session *s = fuse_req_userdata(req);
    COUNT(OP_FORGET);
    PyObject *list = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; list != NULL && i < count; i++) {
        PyObject *pair = Py_BuildValue("(KK)", (unsigned long long)fd[i].ino,
                                       (unsigned long long)fd[i].nlookup);
        if (pair == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    fuse_reply_none(req);   /* frees req */
    PyObject *t = list ? Py_BuildValue("(iiKN)", OP_FORGET, 0, 0ULL, list) : NULL;
    if (t == NULL) {
        PyErr_Clear();
        return;
    }
    n_python[OP_FORGET]++;
    Py_XSETREF(s->request, t);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    Session *s = fuse_req_userdata(req);
    COUNT(OP_GETATTR);
    AttrData d;
    if (s->table != NULL && table_get(s->table, ino, &d, NULL)) {
        struct fuse_entry_param e;
        data_to_entry(&d, &e);
        fuse_reply_attr(req, &e.attr, e.attr_timeout);
        return;
    }
    POST(OP_GETATTR, "K", (unsigned long long)ino);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
    COUNT(OP_READLINK);
    POST(OP_READLINK, "K", (unsigned long long)ino);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino; (void)fi;
    COUNT(OP_OPEN);
    /* the kernel's no-open mode: no OPEN or RELEASE from now on, read() gets the inode,
       file data stays in the page cache (FOPEN_KEEP_CACHE is its default then) */
    fuse_reply_err(req, ENOSYS);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    COUNT(OP_READ);
    POST(OP_READ, "KnL", (unsigned long long)ino,
                                     (Py_ssize_t)size, (long long)off);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    COUNT(OP_OPENDIR);
    POST(OP_OPENDIR, "K", (unsigned long long)ino);
}

/* READDIRPLUS only (plain READDIR is left to libfuse's ENOSYS: the kernel sends it only
   when it cannot do readdirplus, and it takes no lookup reference for its entries) */
static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    COUNT(OP_READDIR);
    POST(OP_READDIR, "KnLK", (unsigned long long)ino,
                                        (Py_ssize_t)size, (long long)off,
                                        (unsigned long long)fi->fh);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    COUNT(OP_RELEASEDIR);
    POST(OP_RELEASEDIR, "KK",
                                           (unsigned long long)ino, (unsigned long long)fi->fh);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
    COUNT(OP_STATFS);
    POST(OP_STATFS, "K", (unsigned long long)ino);
}

/* the xattr class of ino when the session knows it (0: Python decides) */
static int session_class(Session *s, fuse_ino_t ino)
{
    return s->table != NULL ? class_of(s->table, ino) : 0;
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    Session *s = fuse_req_userdata(req);
    COUNT(OP_GETXATTR);
    int c = session_class(s, ino);
    if (c != 0 && !class_allows(&s->table->classes[c], name)) {
        fuse_reply_err(req, ENODATA);   /* a name this inode can never have */
        return;
    }
    POST(OP_GETXATTR, "Kyn", (unsigned long long)ino,
                                         name, (Py_ssize_t)size);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    Session *s = fuse_req_userdata(req);
    COUNT(OP_LISTXATTR);
    int c = session_class(s, ino);
    if (c != 0 && s->table->classes[c].n_prefixes == 0 && s->table->classes[c].n_names == 0) {
        if (size == 0)   /* an inode that can have none: an empty list */
            fuse_reply_xattr(req, 0);
        else
            fuse_reply_buf(req, NULL, 0);
        return;
    }
    POST(OP_LISTXATTR, "Kn", (unsigned long long)ino,
                                          (Py_ssize_t)size);
}

static const struct fuse_lowlevel_ops ll_ops = {
    .init = ll_init,
    .lookup = ll_lookup,
    .forget = ll_forget,
    .forget_multi = ll_forget_multi,
    .getattr = ll_getattr,
    .readlink = ll_readlink,
    .open = ll_open,
    .read = ll_read,
    .opendir = ll_opendir,
    .readdirplus = ll_readdirplus,
    .releasedir = ll_releasedir,
    .statfs = ll_statfs,
    .getxattr = ll_getxattr,
    .listxattr = ll_listxattr,
};

static int session_init(Session *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"mountpoint", "options", NULL};
    PyObject *mp_obj, *options;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O", names, PyUnicode_FSConverter, &mp_obj,
                                     &options))
        return -1;
    if (self->se != NULL) {
        Py_DECREF(mp_obj);
        PyErr_SetString(PyExc_RuntimeError, "session already made");
        return -1;
    }
    /* argv: "rpfs" then "-o" option for each, "-d" for debug (libfuse prints every request) */
    PyObject *seq = PySequence_Fast(options, "options must be a sequence of str");
    if (seq == NULL) {
        Py_DECREF(mp_obj);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    char **argv = calloc((size_t)(2 * n + 2), sizeof(char *));
    PyObject *keep = PyList_New(0);
    int argc = 0, rc = -1;
    if (argv == NULL || keep == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    argv[argc++] = "rpfs";
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(seq, i), &b))
            goto out;
        PyList_Append(keep, b);
        Py_DECREF(b);
        const char *opt = PyBytes_AS_STRING(b);
        if (strcmp(opt, "debug") == 0) {
            argv[argc++] = "-d";
        } else {
            argv[argc++] = "-o";
            argv[argc++] = (char *)opt;
        }
    }
    struct fuse_args fargs = FUSE_ARGS_INIT(argc, argv);
    self->se = fuse_session_new(&fargs, &ll_ops, sizeof ll_ops, self);
    fuse_opt_free_args(&fargs);
    if (self->se == NULL) {
        PyErr_SetString(PyExc_OSError, "fuse_session_new failed (bad mount options?)");
        goto out;
    }
    if (fuse_session_mount(self->se, PyBytes_AS_STRING(mp_obj)) != 0) {
        fuse_session_destroy(self->se);
        self->se = NULL;
        PyErr_Format(PyExc_OSError, "cannot mount FUSE at %s", PyBytes_AS_STRING(mp_obj));
        goto out;
    }
    self->mounted = 1;
    int fd = fuse_session_fd(self->se);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);  /* a spurious wake-up never blocks */
    rc = 0;
out:
    free(argv);
    Py_XDECREF(keep);
    Py_DECREF(seq);
    Py_DECREF(mp_obj);
    return rc;
}

static PyObject *session_close(Session *self, PyObject *unused)
{
    (void)unused;
    if (self->se != NULL) {
        if (self->mounted)
            fuse_session_unmount(self->se);
        fuse_session_destroy(self->se);
        self->se = NULL;
        self->mounted = 0;
    }
    free(self->buf.mem);
    self->buf.mem = NULL;
    self->buf.size = 0;
    Py_CLEAR(self->request);
    Py_RETURN_NONE;
}

static void session_dealloc(Session *self)
{
    Py_XDECREF(session_close(self, NULL));
    Py_CLEAR(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int live(Session *self)
{
    if (self->se == NULL) {
        PyErr_SetString(PyExc_ValueError, "session is closed");
        return 0;
    }
    return 1;
}

static PyObject *session_process(Session *self, PyObject *unused)
{
    (void)unused;
    if (!live(self))
        return NULL;
    if (fuse_session_exited(self->se))
        Py_RETURN_NONE;
    int res = fuse_session_receive_buf(self->se, &self->buf);
    if (res == -EINTR || res == -EAGAIN || res == 0)
        Py_RETURN_NONE;     /* nothing there, or the session ended (see exited) */
    if (res < 0) {
        errno = -res;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    fuse_session_process_buf(self->se, &self->buf);
    PyObject *r = self->request;
    self->request = NULL;
    if (r == NULL)
        Py_RETURN_NONE;     /* answered here (INIT, an unknown opcode, ENOSYS to OPEN) */
    return r;
}

static PyObject *session_invalidate_entry(Session *self, PyObject *args)
{
    unsigned long long parent;
    const char *name;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Ky#", &parent, &name, &len) || !live(self))
        return NULL;
    int res;
    /* may wait for the kernel's directory lock: never call it from the request loop */
    Py_BEGIN_ALLOW_THREADS
    res = fuse_lowlevel_notify_inval_entry(self->se, parent, name, (size_t)len);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(res);
}

static PyObject *session_fd(Session *self, void *closure)
{
    (void)closure;
    if (!live(self))
        return NULL;
    return PyLong_FromLong(fuse_session_fd(self->se));
}

static PyObject *session_exited(Session *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->se == NULL || fuse_session_exited(self->se));
}

static PyObject *session_exit(Session *self, PyObject *unused)
{
    (void)unused;
    if (self->se != NULL)
        fuse_session_exit(self->se);
    Py_RETURN_NONE;
}

static PyObject *session_serve_from(Session *self, PyObject *arg)
{
    if (arg != Py_None && !PyObject_TypeCheck(arg, &AttrTableType)) {
        PyErr_SetString(PyExc_TypeError, "an AttrTable or None expected");
        return NULL;
    }
    if (arg != Py_None && !table_ready((AttrTable *)arg))
        return NULL;
    Py_XINCREF(arg == Py_None ? NULL : arg);
    Py_XSETREF(self->table, arg == Py_None ? NULL : (AttrTable *)arg);
    Py_RETURN_NONE;
}

static PyMethodDef session_methods[] = {
    {"serve_from", (PyCFunction)session_serve_from, METH_O,
     "serve_from(table): answer GETATTR (and xattr names no inode of a class can have) "
     "from this AttrTable without Python; None: stop."},
    {"process", (PyCFunction)session_process, METH_NOARGS,
     "Read one request and return it as a tuple, or None (nothing to do, or exited)."},
    {"invalidate_entry", (PyCFunction)session_invalidate_entry, METH_VARARGS,
     "invalidate_entry(parent, name): ask the kernel to drop a dentry (from a thread)."},
    {"exit", (PyCFunction)session_exit, METH_NOARGS, "Mark the session as ended."},
    {"close", (PyCFunction)session_close, METH_NOARGS, "Unmount and destroy the session."},
    {NULL}};

static PyGetSetDef session_getset[] = {
    {"fd", (getter)session_fd, NULL, "/dev/fuse's descriptor (non-blocking)", NULL},
    {"exited", (getter)session_exited, NULL, "unmounted, closed or told to exit", NULL},
    {NULL}};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._fusell.Session",
    .tp_doc = "Session(mountpoint, options): a mounted FUSE session ('debug' prints requests).",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)session_init,
    .tp_dealloc = (destructor)session_dealloc,
    .tp_methods = session_methods,
    .tp_getset = session_getset,
};

/* -- DirBuffer: one READDIR(PLUS) reply being filled ----------------------------------- */

#define NAME_MAX_FUSE 1024   /* the kernel's FUSE_NAME_MAX: a longer entry fails the listing */

typedef struct {
    PyObject_HEAD
    PyObject *request;     /* the Request it answers (owned), or None (tests) */
    char *mem;
    size_t size, used;
    unsigned long long added;   /* entries added, in all */
    unsigned long long linked;  /* ... of which the kernel links (a node id sent) */
    int link;                   /* 0: entries go with node id 0, names only (see below) */
} DirBuffer;

static int dirbuf_init(DirBuffer *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"request", "size", NULL};
    PyObject *r;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "On", names, &r, &size))
        return -1;
    if (r != Py_None && !PyObject_TypeCheck(r, &RequestType)) {
        PyErr_SetString(PyExc_TypeError, "a Request or None expected");
        return -1;
    }
    if (size < 0 || size > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "bad readdir size");
        return -1;
    }
    free(self->mem);
    self->mem = malloc((size_t)size + 1);
    if (self->mem == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(r);
    Py_XSETREF(self->request, r);
    self->size = (size_t)size;
    self->used = 0;
    self->added = self->linked = 0;
    self->link = 1;
    return 0;
}

static void dirbuf_dealloc(DirBuffer *self)
{
    free(self->mem);
    Py_XDECREF(self->request);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Adds one entry (name: len bytes, no NUL or '/') if it fits: 1 added, 0 full, -1 error. */
static int dirbuf_add(DirBuffer *d, const char *name, size_t len, const struct fuse_entry_param *e,
                      off_t next)
{
    char z[NAME_MAX_FUSE + 1];
    if (len == 0 || len > NAME_MAX_FUSE || memchr(name, 0, len) || memchr(name, '/', len)) {
        PyErr_SetString(PyExc_ValueError, "an entry name must be 1-1024 bytes without NUL or '/'");
        return -1;
    }
    memcpy(z, name, len);
    z[len] = 0;
    /* libfuse builds the entry from the values alone (the request only names the reply) */
    fuse_req_t req = NULL;
    if (d->request != NULL && d->request != Py_None)
        req = ((Request *)d->request)->req;
    size_t room = d->size - d->used;
    struct fuse_entry_param unlinked;
    if (!d->link) {
        /* node id 0 in a READDIRPLUS entry: the kernel lists the name (its inode number
           and kind go in the dirent) but makes no inode and takes no reference for it */
        unlinked = *e;
        unlinked.ino = 0;
        e = &unlinked;
    }
    size_t need = fuse_add_direntry_plus(req, d->mem + d->used, room, z, e, next);
    if (need > room)
        return 0;
    d->used += need;
    d->added++;
    if (e->ino != 0)
        d->linked++;
    return 1;
}

static PyObject *dirbuf_len(DirBuffer *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(self->used);
}

static PyObject *dirbuf_added(DirBuffer *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->added);
}

static PyObject *dirbuf_linked(DirBuffer *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->linked);
}

static PyObject *dirbuf_get_link(DirBuffer *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->link);
}

static int dirbuf_set_link(DirBuffer *self, PyObject *value, void *closure)
{
    (void)closure;
    int v = value == NULL ? -1 : PyObject_IsTrue(value);
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "link cannot be deleted");
        return -1;
    }
    self->link = v;
    return 0;
}

static double timeout_of(uint64_t sec, uint32_t nsec)
{
    return (double)sec + nsec / 1e9;
}

/* entries() -> [(name, EntryAttributes, next offset)]: what the kernel will read (tests) */
static PyObject *dirbuf_entries(DirBuffer *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(0);
    size_t pos = 0;
    while (out != NULL && pos + FUSE_NAME_OFFSET_DIRENTPLUS <= self->used) {
        const struct fuse_direntplus *dp = (const void *)(self->mem + pos);
        size_t len = FUSE_DIRENTPLUS_SIZE(dp);
        if (pos + len > self->used) {
            PyErr_SetString(PyExc_ValueError, "a truncated entry");
            Py_CLEAR(out);
            break;
        }
        const struct fuse_entry_out *eo = &dp->entry_out;
        Attrs *a = PyObject_New(Attrs, &AttrsType);
        if (a == NULL) {
            Py_CLEAR(out);
            break;
        }
        AttrData *d = &a->d;
        memset(d, 0, sizeof *d);
        d->st_ino = eo->attr.ino;
        d->generation = eo->generation;
        d->entry_timeout = timeout_of(eo->entry_valid, eo->entry_valid_nsec);
        d->attr_timeout = timeout_of(eo->attr_valid, eo->attr_valid_nsec);
        d->st_size = (long long)eo->attr.size;
        d->st_blocks = (long long)eo->attr.blocks;
        d->st_atime_ns = (long long)eo->attr.atime * 1000000000LL + eo->attr.atimensec;
        d->st_mtime_ns = (long long)eo->attr.mtime * 1000000000LL + eo->attr.mtimensec;
        d->st_ctime_ns = (long long)eo->attr.ctime * 1000000000LL + eo->attr.ctimensec;
        d->st_mode = eo->attr.mode;
        d->st_nlink = eo->attr.nlink;
        d->st_uid = eo->attr.uid;
        d->st_gid = eo->attr.gid;
        d->st_rdev = eo->attr.rdev;
        d->st_blksize = eo->attr.blksize;
        PyObject *t = Py_BuildValue("(y#NK)", dp->dirent.name, (Py_ssize_t)dp->dirent.namelen,
                                    a, (unsigned long long)dp->dirent.off);
        if (t == NULL || PyList_Append(out, t) < 0)
            Py_CLEAR(out);
        Py_XDECREF(t);
        pos += len;
    }
    return out;
}

static PyMethodDef dirbuf_methods[] = {
    {"entries", (PyCFunction)dirbuf_entries, METH_NOARGS,
     "entries() -> [(name, EntryAttributes, next offset)]: the buffer read back."},
    {NULL}};

static PyGetSetDef dirbuf_getset[] = {
    {"used", (getter)dirbuf_len, NULL, "bytes filled", NULL},
    {"added", (getter)dirbuf_added, NULL, "entries added", NULL},
    {"linked", (getter)dirbuf_linked, NULL, "entries added with a node id (the kernel links "
     "them and takes a lookup reference each)", NULL},
    {"link", (getter)dirbuf_get_link, (setter)dirbuf_set_link, "False: entries from now on "
     "go with node id 0 (names, inode numbers and kinds only; nothing linked)", NULL},
    {NULL}};

static PyTypeObject DirBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._fusell.DirBuffer",
    .tp_doc = "DirBuffer(request, size): the entries of one READDIRPLUS reply (request None: "
              "a buffer to read back with entries()).",
    .tp_basicsize = sizeof(DirBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)dirbuf_init,
    .tp_dealloc = (destructor)dirbuf_dealloc,
    .tp_methods = dirbuf_methods,
    .tp_getset = dirbuf_getset,
};

/* readdir_reply(buffer, name, attrs, next_offset) -> whether the entry fitted */
static PyObject *readdir_reply(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &DirBufferType) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "readdir_reply(DirBuffer, bytes, EntryAttributes, int)");
        return NULL;
    }
    long long next = PyLong_AsLongLong(args[3]);
    if (next == -1 && PyErr_Occurred())
        return NULL;
    struct fuse_entry_param e;
    if (to_entry(args[2], &e) < 0)
        return NULL;
    int r = dirbuf_add((DirBuffer *)args[0], PyBytes_AS_STRING(args[1]),
                       (size_t)PyBytes_GET_SIZE(args[1]), &e, next);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* An array argument: its items, how many, and their size. */
typedef struct {
    Py_buffer view;
    Py_ssize_t n;
} Array;

static int array_get(PyObject *o, Array *a, Py_ssize_t itemsize, const char *what)
{
    if (PyObject_GetBuffer(o, &a->view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (a->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes expected, not %zd", what,
                     itemsize, a->view.itemsize);
        PyBuffer_Release(&a->view);
        return -1;
    }
    a->n = a->view.len / itemsize;
    return 0;
}

/* fill_numbered(buffer, names, offsets, numbers, kinds, start, stop, base, modes, stub, table
   [, marks]) -> entries added: children start.. of a listing's arrays (names bytes, offsets uint32,
   numbers uint64, kinds uint8), as the kernel's inodes base | number; an inode the table
   holds goes with its complete attributes, any other as the stub (its st_mode from
   modes[kind], attr_timeout 0: the kernel asks getattr). Stops at stop or a full buffer.
   marks (a writable byte per child, optional): 1 for a child once sent linked with its
   complete attributes; such a child is sent again unlinked (node id 0: the kernel has its
   dentry and attributes, and relinking 50,000 of them cost a re-listing `find` 0.05 s). */
static PyObject *fill_numbered(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if ((nargs != 11 && nargs != 12) || !PyObject_TypeCheck(args[0], &DirBufferType) ||
        !PyObject_TypeCheck(args[9], &AttrsType) ||
        (args[10] != Py_None && !PyObject_TypeCheck(args[10], &AttrTableType))) {
        PyErr_SetString(PyExc_TypeError, "fill_numbered(DirBuffer, names, offsets, numbers, "
                        "kinds, start, stop, base, modes, EntryAttributes, AttrTable|None)");
        return NULL;
    }
    DirBuffer *d = (DirBuffer *)args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[5]), stop = PyLong_AsSsize_t(args[6]);
    unsigned long long base = PyLong_AsUnsignedLongLong(args[7]);
    if (PyErr_Occurred())
        return NULL;
    AttrTable *table = args[10] == Py_None ? NULL : (AttrTable *)args[10];
    if (table != NULL && !table_ready(table))
        return NULL;
    unsigned int modes[8];
    PyObject *mseq = PySequence_Fast(args[8], "modes: a sequence of int");
    if (mseq == NULL)
        return NULL;
    Py_ssize_t n_modes = PySequence_Fast_GET_SIZE(mseq);
    if (n_modes > 8) {
        Py_DECREF(mseq);
        PyErr_SetString(PyExc_ValueError, "modes: at most 8");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n_modes; k++) {
        modes[k] = (unsigned int)PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(mseq, k));
        if (PyErr_Occurred()) {
            Py_DECREF(mseq);
            return NULL;
        }
    }
    Py_DECREF(mseq);
    Array names, offsets, numbers, kinds;
    if (array_get(args[1], &names, 1, "names") < 0)
        return NULL;
    if (array_get(args[2], &offsets, 4, "offsets") < 0) {
        PyBuffer_Release(&names.view);
        return NULL;
    }
    if (array_get(args[3], &numbers, 8, "numbers") < 0) {
        PyBuffer_Release(&names.view);
        PyBuffer_Release(&offsets.view);
        return NULL;
    }
    if (array_get(args[4], &kinds, 1, "kinds") < 0) {
        PyBuffer_Release(&names.view);
        PyBuffer_Release(&offsets.view);
        PyBuffer_Release(&numbers.view);
        return NULL;
    }
    const char *nm = names.view.buf;
    const uint32_t *off = offsets.view.buf;
    const uint64_t *num = numbers.view.buf;
    const uint8_t *kind = kinds.view.buf;
    const AttrData *stub = &((Attrs *)args[9])->d;
    Py_buffer marks = {0};
    if (nargs == 12 && args[11] != Py_None) {
        if (PyObject_GetBuffer(args[11], &marks, PyBUF_WRITABLE) < 0) {
            PyBuffer_Release(&names.view);
            PyBuffer_Release(&offsets.view);
            PyBuffer_Release(&numbers.view);
            PyBuffer_Release(&kinds.view);
            return NULL;
        }
    }
    uint8_t *mark = marks.buf;
    int link = d->link;
    Py_ssize_t added = 0, i = start < 0 ? 0 : start;
    int err = 0;
    for (; i < stop; i++) {
        if (i >= numbers.n)
            break;   /* past the end: done */
        if (i >= kinds.n || i + 1 >= offsets.n || off[i] > off[i + 1] ||
            off[i + 1] > (uint64_t)names.n || kind[i] >= n_modes || num[i] >> SLOT_SHIFT) {
            PyErr_Format(PyExc_ValueError, "listing arrays disagree at entry %zd", i);
            break;
        }
        AttrData a;
        unsigned long long ino = base | num[i];
        int complete = 1;
        if (table == NULL || !table_get(table, ino, &a, NULL)) {
            a = *stub;
            a.st_ino = ino;
            a.st_mode = modes[kind[i]];
            complete = 0;
        }
        int marked = mark != NULL && i < marks.len && mark[i];
        struct fuse_entry_param e;
        data_to_entry(&a, &e);
        d->link = link && !marked;
        int r = dirbuf_add(d, nm + off[i], off[i + 1] - off[i], &e, (off_t)(i + 1));
        if (r < 0)
            err = 1;
        if (r <= 0)
            break;
        if (d->link && complete && mark != NULL && i < marks.len)
            mark[i] = 1;
        added++;
    }
    d->link = link;
    if (marks.buf != NULL)
        PyBuffer_Release(&marks);
    if (PyErr_Occurred())
        err = 1;
    PyBuffer_Release(&names.view);
    PyBuffer_Release(&offsets.view);
    PyBuffer_Release(&numbers.view);
    PyBuffer_Release(&kinds.view);
    if (err)
        return NULL;
    return PyLong_FromSsize_t(added);
}

/* -- replies --------------------------------------------------------------------------- */

static PyObject *reply_done(int res)
{
    /* a failed reply means the request was interrupted or the mount is gone: nothing to do */
    (void)res;
    Py_RETURN_NONE;
}

static PyObject *reply_err(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    int err;
    if (!PyArg_ParseTuple(args, "Oi", &r, &err))
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_err(req, err));
}

static PyObject *reply_entry(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r, *a;
    struct fuse_entry_param e;
    if (!PyArg_ParseTuple(args, "OO", &r, &a) || to_entry(a, &e) < 0)
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_entry(req, &e));
}

static PyObject *reply_attr(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r, *a;
    struct fuse_entry_param e;
    if (!PyArg_ParseTuple(args, "OO", &r, &a) || to_entry(a, &e) < 0)
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_attr(req, &e.attr, e.attr_timeout));
}

static PyObject *reply_data(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "Oy*", &r, &b))
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL) {
        PyBuffer_Release(&b);
        return NULL;
    }
    int res;
    Py_BEGIN_ALLOW_THREADS   /* the kernel copies up to 1 MiB: other threads go on meanwhile */
    res = fuse_reply_buf(req, b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return reply_done(res);
}

/* A READ's data as several buffers in order (the decoded chunks' own bytes when a range
   spans chunks: ``Stream.read_buffers``), sent as one reply with nothing joined. */
static PyObject *reply_buffers(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r, *seq;
    if (!PyArg_ParseTuple(args, "OO", &r, &seq))
        return NULL;
    PyObject *items = PySequence_Fast(seq, "reply_buffers: a sequence of buffers expected");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items), got = 0;
    Py_buffer *bufs = PyMem_Calloc(n ? (size_t)n : 1, sizeof *bufs);
    struct iovec *iov = PyMem_Calloc(n ? (size_t)n : 1, sizeof *iov);
    PyObject *result = NULL;
    if (bufs == NULL || iov == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(items, got), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;   /* not answered: the caller still can */
        iov[got].iov_base = bufs[got].buf;
        iov[got].iov_len = (size_t)bufs[got].len;
    }
    fuse_req_t req = req_take(r);
    if (req == NULL)
        goto done;
    int res;
    Py_BEGIN_ALLOW_THREADS
    res = n ? fuse_reply_iov(req, iov, (int)n) : fuse_reply_buf(req, NULL, 0);
    Py_END_ALLOW_THREADS
    result = reply_done(res);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(iov);
    Py_DECREF(items);
    return result;
}

static PyObject *reply_dir(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    DirBuffer *d;
    if (!PyArg_ParseTuple(args, "OO!", &r, &DirBufferType, &d))
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_buf(req, d->mem, d->used));
}

static PyObject *reply_readlink(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    const char *target;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Oy#", &r, &target, &len))
        return NULL;
    if ((size_t)len != strlen(target)) {
        PyErr_SetString(PyExc_ValueError, "link target contains a NUL byte");
        return NULL;
    }
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_readlink(req, target));
}

static PyObject *reply_open(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    unsigned long long fh;
    int keep;
    if (!PyArg_ParseTuple(args, "OKp", &r, &fh, &keep))
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    struct fuse_file_info fi;
    memset(&fi, 0, sizeof fi);
    fi.fh = fh;
    fi.keep_cache = keep;
    fi.cache_readdir = keep;   /* a directory that never changes: the kernel keeps its listing */
    return reply_done(fuse_reply_open(req, &fi));
}

static PyObject *reply_xattr(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "On", &r, &size))
        return NULL;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_xattr(req, (size_t)size));
}

static PyObject *reply_statfs(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    struct statvfs st;
    unsigned long bsize, frsize, namemax;
    unsigned long long blocks, bfree, bavail, files, ffree, favail;
    memset(&st, 0, sizeof st);
    if (!PyArg_ParseTuple(args, "O(kkKKKKKKk)", &r, &bsize, &frsize, &blocks, &bfree, &bavail,
                          &files, &ffree, &favail, &namemax))
        return NULL;
    st.f_bsize = bsize;
    st.f_frsize = frsize;
    st.f_blocks = blocks;
    st.f_bfree = bfree;
    st.f_bavail = bavail;
    st.f_files = files;
    st.f_ffree = ffree;
    st.f_favail = favail;
    st.f_namemax = namemax;
    fuse_req_t req = req_take(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_statfs(req, &st));
}

static PyObject *counts(PyObject *mod, PyObject *unused)
{
    (void)mod; (void)unused;
    PyObject *d = PyDict_New();
    for (int op = 0; d != NULL && op < N_OPS; op++) {
        if (!n_received[op] && !n_python[op])
            continue;
        PyObject *k = PyLong_FromLong(op);
        PyObject *v = Py_BuildValue("(KK)", n_received[op], n_python[op]);
        if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}

static PyMethodDef module_methods[] = {
    {"readdir_reply", (PyCFunction)(void (*)(void))readdir_reply, METH_FASTCALL,
     "readdir_reply(buffer, name, attrs, next_offset) -> bool: add one entry if it fits."},
    {"fill_numbered", (PyCFunction)(void (*)(void))fill_numbered, METH_FASTCALL,
     "fill_numbered(buffer, names, offsets, numbers, kinds, start, stop, base, modes, stub, "
     "table) -> entries added from a listing's arrays (see the source)."},
    {"counts", counts, METH_NOARGS,
     "counts() -> {opcode: (received, handed to Python)} since the module was loaded."},
    {"reply_err", reply_err, METH_VARARGS, "reply_err(request, errno); 0 answers 'done'."},
    {"reply_entry", reply_entry, METH_VARARGS, "reply_entry(request, EntryAttributes)"},
    {"reply_attr", reply_attr, METH_VARARGS, "reply_attr(request, EntryAttributes)"},
    {"reply_data", reply_data, METH_VARARGS, "reply_data(request, bytes-like)"},
    {"reply_buffers", reply_buffers, METH_VARARGS, "reply_buffers(request, [bytes-like, ...]): one reply, nothing joined"},
    {"reply_dir", reply_dir, METH_VARARGS, "reply_dir(request, DirBuffer)"},
    {"reply_readlink", reply_readlink, METH_VARARGS, "reply_readlink(request, bytes)"},
    {"reply_open", reply_open, METH_VARARGS,
     "reply_open(request, fh, keep): keep also sets cache_readdir (for OPENDIR)."},
    {"reply_xattr", reply_xattr, METH_VARARGS, "reply_xattr(request, size): the size asked"},
    {"reply_statfs", reply_statfs, METH_VARARGS,
     "reply_statfs(request, (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax))"},
    {NULL}};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "rpfs._fusell", "libfuse3 low-level binding for rpfs's mount.", -1,
    module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fusell(void)
{
    if (PyType_Ready(&AttrsType) < 0 || PyType_Ready(&SessionType) < 0 ||
        PyType_Ready(&DirBufferType) < 0 || PyType_Ready(&RequestType) < 0 ||
        PyType_Ready(&AttrTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "EntryAttributes", (PyObject *)&AttrsType) < 0 ||
        PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0 ||
        PyModule_AddObjectRef(m, "DirBuffer", (PyObject *)&DirBufferType) < 0 ||
        PyModule_AddObjectRef(m, "Request", (PyObject *)&RequestType) < 0 ||
        PyModule_AddObjectRef(m, "AttrTable", (PyObject *)&AttrTableType) < 0)
        goto fail;
#define C(name) if (PyModule_AddIntConstant(m, #name, OP_##name) < 0) goto fail
    C(LOOKUP); C(FORGET); C(GETATTR); C(READLINK); C(READ); C(STATFS); C(GETXATTR);
    C(LISTXATTR); C(OPENDIR); C(READDIR); C(RELEASEDIR); C(INIT); C(OPEN);
#undef C
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
