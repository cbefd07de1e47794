"""The mark step of gc: which chunk ids some stored file references (also used by an s3://
cache following a gc elsewhere, to drop rows nothing uses)."""

from __future__ import annotations

import rpfs.store.catalog as catalog


class Marks:
    """Live chunk ids as one byte per id (ids are dense AUTOINCREMENT integers): 180 MB for
    180 M chunks, where a Python set would need ~10 GB."""

    def __init__(self, max_id: int):
        self.bits = bytearray(max_id + 1)
        self.count = 0

    def add_all(self, ids) -> None:
        bits = self.bits
        n = len(bits)
        for i in ids:
            if 0 < i < n and not bits[i]:
                bits[i] = 1
                self.count += 1

    def __contains__(self, cid: int) -> bool:
        return 0 < cid < len(self.bits) and bool(self.bits[cid])

    def __len__(self) -> int:
        return self.count


def mark(repo, exclude: set[int] = frozenset()) -> Marks:
    """Every chunk id some stored file references (files of ``exclude`` RPs left out).
    A chunk map identical to the one just marked for the same path (an unchanged file in
    the next recovery point) is skipped without decoding."""
    db = repo.writer
    max_id = db.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0]
    live = Marks(max_id)
    last: dict[str, bytes] = {}
    for size, blob, cs, path, rp_id in db.execute(
            "SELECT f.size, f.chunk_map, r.chunk_size, f.path, f.rp_id FROM files f"
            " JOIN recovery_points r ON r.id = f.rp_id ORDER BY r.vm_id, f.path, r.time"):
        if rp_id in exclude:
            continue
        if last.get(path) == blob:
            continue
        last[path] = blob
        live.add_all(catalog.decode_map(blob, (size + cs - 1) // cs, path))
    return live
