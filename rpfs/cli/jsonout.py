"""JSON for ``--json`` output: UTF-8 text people can read, and always valid.

Names from a guest can hold bytes that are not UTF-8 (kept as lone surrogates by
``os.fsdecode``); written raw they would make the line invalid JSON. Such a document is
written with ``\\uXXXX`` escapes instead, which ``json.loads`` turns back into the same
string (and ``os.fsencode`` into the guest's bytes).
"""

from __future__ import annotations

import json


def dumps(obj, **kw) -> str:
    text = json.dumps(obj, ensure_ascii=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, **kw)
    return text
