"""The emulator's result video: a well-formed MP4 holding one H.264 frame.

(FFmpeg, through PyAV 18.1, decodes it as one 16x16 yuv420p key frame of the expected shade;
that check needs a media library, so here the structure is verified box by box.)
"""

from __future__ import annotations

import struct

import pytest

from grok_imagine_async.testing._emulator import mp4_bytes

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, tuple[int, int]]:
    """Every box by type (path-less), as (payload start, end); checks sizes tile exactly."""
    end = len(data) if end is None else end
    found: dict[bytes, tuple[int, int]] = {}
    offset = start
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8
        assert offset + size <= end
        found[kind] = (offset + 8, offset + size)
        if kind in CONTAINERS:
            found.update(boxes(data, offset + 8, offset + size))
        offset += size
    assert offset == end
    return found


@pytest.mark.parametrize("shade", [0, 1, 127, 255])
def test_mp4_boxes_are_complete_and_point_at_the_frame(shade: int) -> None:
    data = mp4_bytes(shade)
    found = boxes(data)
    for kind in (b"ftyp", b"moov", b"mvhd", b"tkhd", b"mdhd", b"hdlr", b"stsd", b"stco", b"mdat"):
        assert kind in found
    assert data[found[b"ftyp"][0] : found[b"ftyp"][0] + 4] == b"isom"
    assert data[found[b"hdlr"][0] + 8 : found[b"hdlr"][0] + 12] == b"vide"
    assert b"avc1" in data and b"avcC" in data
    # The chunk offset and sample size lead exactly to the one length-prefixed NAL in mdat.
    (chunk_offset,) = struct.unpack(">I", data[found[b"stco"][1] - 4 : found[b"stco"][1]])
    (sample_size,) = struct.unpack(">I", data[found[b"stsz"][1] - 4 : found[b"stsz"][1]])
    assert (chunk_offset, chunk_offset + sample_size) == found[b"mdat"]
    (nal_length,) = struct.unpack(">I", data[chunk_offset : chunk_offset + 4])
    assert nal_length == sample_size - 4
    assert data[chunk_offset + 4] & 0x1F == 5  # an IDR slice
    # The avcC record carries a Baseline SPS and a PPS.
    at = data.index(b"avcC") - 4  # inside the avc1 sample entry, after its fixed fields
    (size,) = struct.unpack(">I", data[at : at + 4])
    avcc = data[at + 8 : at + size]
    assert avcc[0] == 1 and avcc[1] == 66
    (sps_length,) = struct.unpack(">H", avcc[6:8])
    assert avcc[8] & 0x1F == 7
    assert avcc[8 + sps_length + 3] & 0x1F == 8


def test_shades_give_distinct_small_files() -> None:
    files = {mp4_bytes(shade) for shade in range(0, 220, 20)}
    assert len(files) == 11
    assert all(500 < len(f) < 2000 for f in files)
