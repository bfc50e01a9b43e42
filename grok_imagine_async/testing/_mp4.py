"""A tiny but real MP4 file: one 16x16 H.264 frame, built from scratch.

The frame is a single I_PCM macroblock (raw samples, no prediction or transform), which is the
simplest picture a Baseline-profile decoder accepts; the container is the usual
``ftyp`` + ``moov`` (one video track with an ``avc1``/``avcC`` sample entry) + ``mdat``.
About 800 bytes, so serving 200,000 of them in a benchmark costs nothing.
"""

from __future__ import annotations

import functools
import struct

WIDTH = HEIGHT = 16
TIMESCALE = 1000
FRAME_DURATION = 1000  # one frame shown for one second
_UNITY_MATRIX = (0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


# The three NAL units of the picture, their bits written out once (Exp-Golomb fields, no
# emulation-prevention bytes needed). SPS: Baseline (constraint_set0/1, so also Main), level 1.0,
# one 16x16 macroblock, frame_mbs_only, no VUI. PPS: CAVLC, one slice group, deblocking control.
_SPS = bytes.fromhex("6742c00ada79")
_PPS = bytes.fromhex("68ce3c80")
# IDR slice header: type I, frame_num 0, deblocking off, mb_type I_PCM, then byte-aligned.
_SLICE_HEADER = bytes.fromhex("658884a0d0")


def _idr_slice(luma: int, cb: int, cr: int) -> bytes:
    """The I_PCM slice: its raw samples (never 0..3, so no emulation bytes) and the stop bit."""
    return _SLICE_HEADER + bytes([luma] * 256 + [cb] * 64 + [cr] * 64) + b"\x80"


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _moov(sps: bytes, pps: bytes, sample_size: int, sample_offset: int) -> bytes:
    matrix = struct.pack(">9I", *_UNITY_MATRIX)
    mvhd = _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, TIMESCALE, FRAME_DURATION),
        struct.pack(">IH10x", 0x00010000, 0x0100), matrix, bytes(24), struct.pack(">I", 2),
    )  # fmt: skip
    tkhd = _full_box(
        b"tkhd", 0, 3,  # enabled, in movie
        struct.pack(">III4xI8xhhh2x", 0, 0, 1, FRAME_DURATION, 0, 0, 0),
        matrix, struct.pack(">II", WIDTH << 16, HEIGHT << 16),
    )  # fmt: skip
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, FRAME_DURATION,
                                                0x55C4, 0))  # fmt: skip
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\0")
    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]), struct.pack(">H", len(sps)), sps,
        bytes([1]), struct.pack(">H", len(pps)), pps,
    )  # fmt: skip
    avc1 = _box(
        b"avc1",
        bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16), struct.pack(">HH", WIDTH, HEIGHT),
        struct.pack(">IIIH", 0x00480000, 0x00480000, 0, 1),  # 72 dpi, 1 frame per sample
        bytes(32), struct.pack(">Hh", 0x0018, -1), avcc,
    )  # fmt: skip
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full_box(b"stts", 0, 0, struct.pack(">III", 1, 1, FRAME_DURATION)),
        _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, 1, 1)),
        _full_box(b"stsz", 0, 0, struct.pack(">III", 0, 1, sample_size)),
        _full_box(b"stco", 0, 0, struct.pack(">II", 1, sample_offset)),
    )  # fmt: skip
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    minf = _box(b"minf", _full_box(b"vmhd", 0, 1, bytes(8)), dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


@functools.lru_cache(maxsize=256)
def mp4_bytes(shade: int = 128) -> bytes:
    """A valid one-frame MP4 whose picture is a flat colour picked by ``shade`` (0-255).

    Different shades give different bytes, so a test can tell two downloaded videos apart.
    """
    luma = 16 + shade % 220  # video range: the samples are never 0..3
    sps, pps = _SPS, _PPS
    slice_nal = _idr_slice(luma, 128, 255 - luma)
    sample = struct.pack(">I", len(slice_nal)) + slice_nal
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    moov_size = len(_moov(sps, pps, len(sample), 0))  # the offset's value does not change size
    moov = _moov(sps, pps, len(sample), len(ftyp) + moov_size + 8)
    return ftyp + moov + _box(b"mdat", sample)
