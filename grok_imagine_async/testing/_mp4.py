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


class _BitWriter:
    """Writes the bit fields of an H.264 RBSP (fixed width and Exp-Golomb)."""

    def __init__(self) -> None:
        self._bits: list[int] = []

    def u(self, width: int, value: int) -> None:
        self._bits.extend((value >> shift) & 1 for shift in reversed(range(width)))

    def ue(self, value: int) -> None:
        coded = value + 1
        self.u(coded.bit_length() - 1, 0)
        self.u(coded.bit_length(), coded)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align(self) -> None:
        while len(self._bits) % 8:
            self._bits.append(0)

    def trailing(self) -> bytes:
        self._bits.append(1)  # rbsp_stop_one_bit
        self.align()
        return bytes(
            int("".join(map(str, self._bits[i : i + 8])), 2) for i in range(0, len(self._bits), 8)
        )


def _nal(ref_idc: int, unit_type: int, rbsp: bytes) -> bytes:
    """A NAL unit with emulation prevention (no 0x000000..0x000003 inside the payload)."""
    out = bytearray([(ref_idc << 5) | unit_type])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _sps() -> bytes:
    bits = _BitWriter()
    bits.u(8, 66)  # profile_idc: Baseline
    bits.u(8, 0b11000000)  # constraint_set0/1: also decodable as Main
    bits.u(8, 10)  # level_idc 1.0
    for value in (0, 0, 2, 1):  # sps id, log2_max_frame_num-4, poc type 2, max ref frames
        bits.ue(value)
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(WIDTH // 16 - 1)
    bits.ue(HEIGHT // 16 - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    bits.u(1, 0)  # frame_cropping_flag
    bits.u(1, 0)  # vui_parameters_present_flag
    return _nal(3, 7, bits.trailing())


def _pps() -> bytes:
    bits = _BitWriter()
    bits.ue(0)  # pps id
    bits.ue(0)  # sps id
    bits.u(1, 0)  # CAVLC
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # one slice group
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(1, 0)  # weighted_pred_flag
    bits.u(2, 0)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 1)  # deblocking_filter_control_present_flag
    bits.u(1, 0)  # constrained_intra_pred_flag
    bits.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(3, 8, bits.trailing())


def _idr_slice(luma: int, cb: int, cr: int) -> bytes:
    bits = _BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I (all slices of the picture)
    bits.ue(0)  # pps id
    bits.u(4, 0)  # frame_num
    bits.ue(0)  # idr_pic_id
    bits.u(1, 0)  # no_output_of_prior_pics_flag
    bits.u(1, 0)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc: off
    bits.ue(25)  # mb_type: I_PCM
    bits.align()  # pcm_alignment_zero_bits
    for value, count in ((luma, 256), (cb, 64), (cr, 64)):
        for _ in range(count):
            bits.u(8, value)
    return _nal(3, 5, bits.trailing())


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
    luma = 16 + shade % 220  # video range, and never 0, so no emulation bytes are needed
    sps, pps = _sps(), _pps()
    slice_nal = _idr_slice(luma, 128, 255 - luma)
    sample = struct.pack(">I", len(slice_nal)) + slice_nal
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    moov_size = len(_moov(sps, pps, len(sample), 0))  # the offset's value does not change size
    moov = _moov(sps, pps, len(sample), len(ftyp) + moov_size + 8)
    return ftyp + moov + _box(b"mdat", sample)
