"""A small tree served through rpfs's own FUSE binding (rpfs/_fusell.c) by the real mount
code (rpfs.fuse.mount), for tests/test_fusell.py:
``python -m tests.helpers.llfs MOUNTPOINT REPORT``.

The tree: ``ok.txt``; ``bug.txt``, whose stream raises a plain Python exception (a bug, not
damage); ``hostile/``, names a shell or a decoder trips on; ``many/``, 3,000 files. Every
request and every reply the mount sends is counted per request handle; when the mount ends
(unmounted) REPORT gets JSON: how many requests reached Python, which were answered other
than once, and the binding's own counts (``_fusell.counts()``: received, handed to Python).
With LLFS_MISBEHAVE set, the handler misbehaves on purpose: READLINK requests are dropped
unanswered and every READ is answered twice (the report says what the second reply raised).
"""

from __future__ import annotations

import collections
import json
import os
import sys

from rpfs import _fusell, fuse
from rpfs.node import StaticDir, StreamFile, Symlink
from rpfs.tree import Tree
from streams.stream import BytesStream

HOSTILE = ["new\nline", "tab\there", "\udcff\udcfe-not-utf8", "x" * 255, "-rf", " lead",
           "trail ", "back\\slash", "quote'\"", "\u00e9t\u00e9", ".hidden", "*?[]"]
MANY = 3000


def _buggy():
    raise RuntimeError("a bug in a stream opener")


def tree() -> Tree:
    def file(name, key, data):
        return StreamFile(name, key, len(data), lambda: BytesStream(data, name))

    def hostile():
        return [file(n, ("h", n), os.fsencode(n)) for n in HOSTILE]

    def many():
        return [file(f"f{i:05d}", ("m", i), b"%d\n" % i) for i in range(MANY)]

    root = StaticDir("", ("llfs",), lambda: [
        file("ok.txt", ("ok",), b"ok\n"),
        StreamFile("bug.txt", ("bug",), 10, _buggy),
        Symlink("link", ("link",), "ok.txt"),
        StaticDir("hostile", ("hostile",), hostile),
        StaticDir("many", ("many",), many)])
    return Tree(root)


class Counter:
    """Counts the replies to each request: every reply_* of the binding goes through it
    (also the ones refused: a second reply to a Request raises)."""

    def __init__(self):
        self.replies: collections.Counter = collections.Counter()
        self.requests: collections.Counter = collections.Counter()   # by opcode
        self.wrong: list[tuple[int, int]] = []   # (opcode, replies) not answered once
        self.second_reply = ""   # with LLFS_MISBEHAVE: what a second reply to a READ raised
        for name in dir(_fusell):
            if name.startswith("reply_"):
                setattr(_fusell, name, self._counted(getattr(_fusell, name)))

    def _counted(self, reply):
        def counted(req, *args):
            self.replies[req] += 1
            return reply(req, *args)
        return counted

    def wrap(self, handle, misbehave: bool = False):
        async def counted_handle(r):
            op, req = r[0], r[1]
            self.requests[op] += 1
            if misbehave and op == _fusell.READLINK:
                return   # dropped unanswered: the Request's end answers EIO
            if misbehave and op == _fusell.READ:
                await handle(r)
                try:   # a second reply to an answered request
                    _fusell.reply_err(req, 0)
                    self.second_reply = "none"
                except Exception as e:
                    self.second_reply = type(e).__name__
                return
            before = self.replies[req]
            expected = 1 if req else 0   # FORGET and INIT come without a request
            try:
                await handle(r)
            finally:
                n = self.replies[req] - before
                if n != expected or req:   # a Request is false once answered
                    self.wrong.append((op, n))
        return counted_handle


def main(mountpoint: str, report: str) -> None:
    counter = Counter()
    real = fuse.Operations.handle
    misbehave = bool(os.environ.get("LLFS_MISBEHAVE"))
    fuse.Operations.handle = lambda self, r: counter.wrap(real.__get__(self), misbehave)(r)
    try:
        fuse.mount(tree(), mountpoint, ready=lambda: print("ready", flush=True))
    finally:
        with open(report, "w") as f:
            json.dump({"requests": counter.requests, "wrong": counter.wrong,
                       "binding": _fusell.counts(), "second_reply": counter.second_reply}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
