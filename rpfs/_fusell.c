/* rpfs._fusell: a small binding of libfuse3's low-level API for rpfs's read-only mount.

   Why our own: the low-level API hands read() and readdir() the inode, so rpfs can answer
   OPEN with ENOSYS (the kernel then sends no OPEN or RELEASE and keeps file data cached), and
   it lets an OPENDIR reply ask the kernel to cache the listing (cache_readdir).

   Shape: ``Session(mountpoint, options)`` creates and mounts a session; Python waits for
   ``fd`` to be readable and calls ``process()``, which reads one request from /dev/fuse and
   returns it as a tuple ``(opcode, request, inode, ...)`` (None for nothing, or after an
   unmount: then ``exited`` is true). FORGET is answered here (it has no reply); every other
   request is answered exactly once by one of the ``reply_*`` functions, which take the
   request handle and plain values. The request handle is the fuse_req_t as an integer: a
   second reply to one would be a use after free, so Python's dispatcher is the only caller.

   ``EntryAttributes`` is a C struct with named members: a readdirplus reply copies it into
   the buffer without looking anything up by name. */

#define PY_SSIZE_T_CLEAN
#define FUSE_USE_VERSION 34
#include <Python.h>
#include <structmember.h>
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>

enum {
    OP_LOOKUP = 1, OP_FORGET = 2, OP_GETATTR = 3, OP_READLINK = 5, OP_READ = 15,
    OP_STATFS = 17, OP_GETXATTR = 22, OP_LISTXATTR = 23, OP_OPENDIR = 27, OP_READDIR = 28,
    OP_RELEASEDIR = 29, OP_INIT = 26,
};

/* -- EntryAttributes ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    unsigned long long st_ino, generation, st_nlink, st_rdev, st_blksize;
    long long st_size, st_blocks, st_atime_ns, st_mtime_ns, st_ctime_ns;
    unsigned int st_mode, st_uid, st_gid;
    double entry_timeout, attr_timeout;
} Attrs;

#define M(name, type) {#name, type, offsetof(Attrs, name), 0, NULL}
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

static void to_stat(const Attrs *a, struct stat *st)
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

static int to_entry(PyObject *o, struct fuse_entry_param *e)
{
    if (!PyObject_TypeCheck(o, &AttrsType)) {
        PyErr_SetString(PyExc_TypeError, "EntryAttributes expected");
        return -1;
    }
    const Attrs *a = (const Attrs *)o;
    memset(e, 0, sizeof *e);
    e->ino = a->st_ino;
    e->generation = a->generation;
    e->attr_timeout = a->attr_timeout;
    e->entry_timeout = a->entry_timeout;
    to_stat(a, &e->attr);
    return 0;
}

/* -- Session -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    struct fuse_session *se;
    struct fuse_buf buf;
    PyObject *request;     /* what the last process() call produced (owned), or NULL */
    int mounted;
} Session;

static PyTypeObject SessionType;

static fuse_req_t req_of(PyObject *o)
{
    fuse_req_t req = (fuse_req_t)PyLong_AsVoidPtr(o);
    if (req == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "no request to answer");
    return req;
}

/* Hands a request to Python; if its tuple cannot be made, answers ENOMEM here. */
static void post(fuse_req_t req, PyObject *t)
{
    Session *s = fuse_req_userdata(req);
    if (t == NULL) {
        PyErr_Clear();
        fuse_reply_err(req, ENOMEM);
        return;
    }
    Py_XSETREF(s->request, t);
}

#define REQ PyLong_FromVoidPtr(req)

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
    PyObject *t = Py_BuildValue("(iiK)", OP_INIT, 0, 0ULL);
    if (t == NULL)
        PyErr_Clear();
    else
        Py_XSETREF(s->request, t);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    post(req, Py_BuildValue("(iNKy)", OP_LOOKUP, REQ, (unsigned long long)parent, name));
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
    Session *s = fuse_req_userdata(req);
    PyObject *t = Py_BuildValue("(iiK[(KK)])", OP_FORGET, 0, 0ULL, (unsigned long long)ino,
                                (unsigned long long)n);
    fuse_reply_none(req);   /* frees req */
    if (t == NULL) {
        PyErr_Clear();   /* the count stays high: the inode is kept, never wrong */
        return;
    }
    Py_XSETREF(s->request, t);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *fd)
{
    Session *s = fuse_req_userdata(req);
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
    Py_XSETREF(s->request, t);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    post(req, Py_BuildValue("(iNK)", OP_GETATTR, REQ, (unsigned long long)ino));
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
    post(req, Py_BuildValue("(iNK)", OP_READLINK, REQ, (unsigned long long)ino));
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino; (void)fi;
    /* the kernel's no-open mode: no OPEN or RELEASE from now on, read() gets the inode,
       file data stays in the page cache (FOPEN_KEEP_CACHE is its default then) */
    fuse_reply_err(req, ENOSYS);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    post(req, Py_BuildValue("(iNKnL)", OP_READ, REQ, (unsigned long long)ino,
                            (Py_ssize_t)size, (long long)off));
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    post(req, Py_BuildValue("(iNK)", OP_OPENDIR, REQ, (unsigned long long)ino));
}

/* READDIRPLUS only (plain READDIR is left to libfuse's ENOSYS: the kernel sends it only
   when it cannot do readdirplus, and it takes no lookup reference for its entries) */
static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    post(req, Py_BuildValue("(iNKnLK)", OP_READDIR, REQ, (unsigned long long)ino,
                            (Py_ssize_t)size, (long long)off, (unsigned long long)fi->fh));
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    post(req, Py_BuildValue("(iNKK)", OP_RELEASEDIR, REQ, (unsigned long long)ino,
                            (unsigned long long)fi->fh));
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
    post(req, Py_BuildValue("(iNK)", OP_STATFS, REQ, (unsigned long long)ino));
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    post(req, Py_BuildValue("(iNKyn)", OP_GETXATTR, REQ, (unsigned long long)ino, name,
                            (Py_ssize_t)size));
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    post(req, Py_BuildValue("(iNKn)", OP_LISTXATTR, REQ, (unsigned long long)ino,
                            (Py_ssize_t)size));
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

static PyMethodDef session_methods[] = {
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

typedef struct {
    PyObject_HEAD
    fuse_req_t req;
    char *mem;
    size_t size, used;
} DirBuffer;

static int dirbuf_init(DirBuffer *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"request", "size", NULL};
    PyObject *r;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "On", names, &r, &size))
        return -1;
    self->req = PyLong_AsVoidPtr(r);   /* only passed on to libfuse's entry builders */
    if (PyErr_Occurred())
        return -1;
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
    self->size = (size_t)size;
    self->used = 0;
    return 0;
}

static void dirbuf_dealloc(DirBuffer *self)
{
    free(self->mem);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *dirbuf_len(DirBuffer *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(self->used);
}

static PyGetSetDef dirbuf_getset[] = {
    {"used", (getter)dirbuf_len, NULL, "bytes filled", NULL}, {NULL}};

static PyTypeObject DirBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rpfs._fusell.DirBuffer",
    .tp_doc = "DirBuffer(request, size): the entries of one READDIRPLUS reply.",
    .tp_basicsize = sizeof(DirBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)dirbuf_init,
    .tp_dealloc = (destructor)dirbuf_dealloc,
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
    DirBuffer *d = (DirBuffer *)args[0];
    const char *name = PyBytes_AS_STRING(args[1]);
    if ((size_t)PyBytes_GET_SIZE(args[1]) != strlen(name)) {
        PyErr_SetString(PyExc_ValueError, "name contains a NUL byte");
        return NULL;
    }
    long long next = PyLong_AsLongLong(args[3]);
    if (next == -1 && PyErr_Occurred())
        return NULL;
    struct fuse_entry_param e;
    if (to_entry(args[2], &e) < 0)
        return NULL;
    size_t room = d->size - d->used;
    size_t need = fuse_add_direntry_plus(d->req, d->mem + d->used, room, name, &e, next);
    if (need > room)
        Py_RETURN_FALSE;
    d->used += need;
    Py_RETURN_TRUE;
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
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
    if (req == NULL) {
        PyBuffer_Release(&b);
        return NULL;
    }
    int res = fuse_reply_buf(req, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return reply_done(res);
}

static PyObject *reply_dir(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *r;
    DirBuffer *d;
    if (!PyArg_ParseTuple(args, "OO!", &r, &DirBufferType, &d))
        return NULL;
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
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
    fuse_req_t req = req_of(r);
    if (req == NULL)
        return NULL;
    return reply_done(fuse_reply_statfs(req, &st));
}

static PyMethodDef module_methods[] = {
    {"readdir_reply", (PyCFunction)(void (*)(void))readdir_reply, METH_FASTCALL,
     "readdir_reply(buffer, name, attrs, next_offset) -> bool: add one entry if it fits."},
    {"reply_err", reply_err, METH_VARARGS, "reply_err(request, errno); 0 answers 'done'."},
    {"reply_entry", reply_entry, METH_VARARGS, "reply_entry(request, EntryAttributes)"},
    {"reply_attr", reply_attr, METH_VARARGS, "reply_attr(request, EntryAttributes)"},
    {"reply_data", reply_data, METH_VARARGS, "reply_data(request, bytes-like)"},
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
        PyType_Ready(&DirBufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "EntryAttributes", (PyObject *)&AttrsType) < 0 ||
        PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0 ||
        PyModule_AddObjectRef(m, "DirBuffer", (PyObject *)&DirBufferType) < 0)
        goto fail;
#define C(name) if (PyModule_AddIntConstant(m, #name, OP_##name) < 0) goto fail
    C(LOOKUP); C(FORGET); C(GETATTR); C(READLINK); C(READ); C(STATFS); C(GETXATTR);
    C(LISTXATTR); C(OPENDIR); C(READDIR); C(RELEASEDIR); C(INIT);
#undef C
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
