import pytest

from streams.errors import FormatError, NotFoundError
from streams.stream import DATA, ZERO, BytesStream, FileStream, SliceStream, ZeroStream, merge_extents, Extent


def test_bytes_and_slice_reads_clip_at_end():
    s = BytesStream(bytes(range(256)) * 4)
    assert s.read(1020, 10) == bytes(range(252, 256))
    part = SliceStream(s, 100, 50)
    assert part.size == 50
    assert part.read(0, 3) == bytes([100, 101, 102])
    assert part.read(49, 10) == bytes([149])
    assert part.read(50, 1) == b""


def test_file_stream_reports_holes(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
        f.seek(1 << 20)
        f.write(b"y" * 4096)
    s = FileStream(path)
    kinds = [(e.kind) for e in s.extents()]
    assert kinds[0] == DATA and ZERO in kinds and kinds[-1] == DATA
    assert sum(e.length for e in s.extents()) == s.size
    assert s.read((1 << 20) - 2, 4) == b"\0\0yy"
    buf = bytearray(8)
    assert s.readinto(4092, buf) == 8 and bytes(buf) == b"xxxx\0\0\0\0"


def test_file_object_adapter():
    s = BytesStream(b"hello world")
    with s.open() as f:
        f.seek(6)
        assert f.read() == b"world"


def test_short_read_is_an_error():
    class Liar(BytesStream):
        def _read(self, offset, length):
            return b"x"

    with pytest.raises(FormatError, match="short read"):
        Liar(b"abcdef", name="liar").read(0, 4)


def test_merge_extents_and_zero_stream():
    z = ZeroStream(10)
    assert z.read(3, 4) == bytes(4)
    merged = list(merge_extents([Extent(0, 5, DATA), Extent(5, 5, DATA), Extent(10, 1, ZERO)]))
    assert merged == [Extent(0, 10, DATA), Extent(10, 1, ZERO)]


def test_errors_are_builtins_too():
    with pytest.raises(FileNotFoundError):
        raise NotFoundError("no such VM")
    e = FormatError("bad CRC", source="a.vhdx", structure="VHDX header 1", offset=0x10000)
    assert str(e) == "a.vhdx: VHDX header 1: offset 0x10000: bad CRC"


def test_read_buffer_and_slice_readinto_equal_read(tmp_path):
    data = bytes(range(256)) * 64
    (tmp_path / "f").write_bytes(data)
    f = FileStream(tmp_path / "f")
    for s in (BytesStream(data), f, SliceStream(f, 1000, 9000), SliceStream(BytesStream(data), 5, 20000)):
        for off, n in ((0, 0), (0, 100), (3, 5000), (s.size - 7, 100), (s.size, 10), (s.size + 5, 1)):
            assert bytes(s.read_buffer(off, n)) == s.read(off, n)
            buf = bytearray(n)
            got = s.readinto(off, buf)
            assert bytes(buf[:got]) == s.read(off, n)
    f.close()
