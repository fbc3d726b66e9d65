"""Pure-Python reference model of SeisComP seedlink's Steim1/Steim2 encoders.

This module is a *test oracle*: it is written for clarity and exactness, not
speed.  It models the encoders in SeisComP's ``apps/seedlink/steim1.cc`` and
``steim2.cc`` word by word, including the quirks that decide the exact bytes:

Differences and the buffer
    Every incoming sample ``x`` produces one difference ``d = x - last``
    computed in 32-bit two's complement (``last`` starts at 0, or at
    ``prev_sample``), and ``last`` becomes ``x`` (the *true* sample, even when
    ``d`` is clamped, see below).  Differences are buffered (at most 7 for
    Steim2, 4 for Steim1).  Differences never restart at a record boundary or
    at a flush: the first difference of a record is relative to the last
    sample of the previous record.

The cap ("samples per word")
    ``cap`` is the minimum over the buffered differences of how many
    differences of that size fit into one 32-bit word:

    ========  =========================  =========================
    cap       Steim2 range               Steim1 range
    ========  =========================  =========================
    7         -8 .. 7                    -
    6         -16 .. 15                  -
    5         -32 .. 31                  -
    4         -128 .. 127                -128 .. 127
    3         -512 .. 511                -
    2         -16384 .. 16383            -32768 .. 32767
    1         anything else              anything else
    ========  =========================  =========================

    Quirk: a freshly constructed encoder starts with ``cap = 4`` (not 7)
    before its first difference, so until the very first word has been
    emitted the cap never exceeds 4.  After every emitted word the cap is
    recomputed from scratch (starting at 7 resp. 4) over the differences that
    are still buffered.

When a word is emitted (``feed``)
    After each difference is buffered, *while* ``buffered >= cap`` one word is
    emitted (this is a loop: after a word, the remaining differences may
    already satisfy the rule again, e.g. when a large difference is left
    behind).  The word takes ``n`` differences from the front of the buffer:
    start with ``n = buffered`` and, while ``n > cap(first n)``, decrement
    ``n``.  Steim2 then packs exactly those ``n``; Steim1 rounds ``n`` down to
    a power of two (4, 2 or 1).  Note: a big difference therefore pushes out
    the small ones before it at once, in whatever format fits their count
    (e.g. three small differences as 3 x 10 bit).

    The loop does not change the bytes (a variant that emits at most one word
    per sample produces identical records), but it decides *when* a record is
    complete: a record is queued while the sample that emits its last word is
    being fed.  ``RefRecord.completed_after`` records that moment; it fixes
    the record's position among the station's records.

``flush``
    Emits words with the same rule but without waiting for the cap (as long
    as anything is buffered); then, if a record has been started, it is
    finished and returned even when it is only partly filled.  A flush with
    nothing buffered and no started record returns nothing; one with nothing
    buffered but a started record returns that record.  After ``feed`` fewer
    differences than the cap are buffered, so a Steim2 flush emits at most one
    word; a Steim1 flush of 3 differences emits 2 + 1, so it can complete a
    record and open (and return) another one.  The differences still continue
    after a flush (``last`` is kept) and the cap is back at its full value.

Records
    A record is opened lazily, when the first word for it is about to be
    emitted.  At that moment its first sample ``X0`` (frame 0, word 1) is set
    to the sample value belonging to the first buffered difference, computed
    as ``last - sum(buffer[1:])`` (32-bit arithmetic).  Data words are placed
    from frame 0 word 3 onwards, 15 words per following frame.  The record is
    complete when the word that fills the last word of the last frame has been
    written; then ``Xn`` (frame 0, word 2) is set to ``last - sum(buffer)``,
    i.e. the value of the sample belonging to the last difference inside the
    record.  Differences still buffered at that moment go into the next
    record, whose ``X0`` is again ``last - sum(buffer[1:])`` when its first
    word is emitted.  A flushed partial record gets ``Xn`` the same way.

Frames
    Word 0 of every frame is the nibble word: two bits per word, word ``w``'s
    code at bits ``31-2w .. 30-2w`` (word 0 itself and frame 0's X0/Xn words
    have code 00).  The whole record starts zeroed, so unused words of a
    partial frame and unused frames are zero.  The reported frame count is
    the number of frames touched, a partly used frame counted.

Steim2 word formats (nibble code, dnib code, bits per difference)
    7 x 4 bit: 11/10, 6 x 5 bit: 11/01, 5 x 6 bit: 11/00, 4 x 8 bit: 01 (no
    dnib), 3 x 10 bit: 10/11, 2 x 15 bit: 10/10, 1 x 30 bit: 10/01.  The dnib
    sits in the two top bits of the data word.
Steim1 word formats
    4 x 8 bit: 01, 2 x 16 bit: 10, 1 x 32 bit: 11.

Steim2 clamping (lossy)
    A difference below ``-2**29`` is replaced by ``-2**29`` and one above
    ``2**29 - 1`` by ``2**29 - 1`` (SeisComP logs a warning).  ``last`` is
    still set to the true sample, so the next difference is taken against the
    true value; the decoded series stays offset from the input from that
    point on.  X0 and Xn are computed from the true ``last`` minus the
    possibly clamped buffered differences, so Xn (and X0, when a clamped
    difference is still buffered behind the first one as the record opens)
    disagree with what a decoder reconstructs; decoders report an Xn
    mismatch.
    Steim1 never clamps (a 32-bit word holds any 32-bit difference).

``first_sample_index``
    Index in the overall input stream of the sample whose difference opens
    the record (the sample that ``X0`` belongs to).  SeisComP stamps a record
    with the time of exactly that sample (``clk.get_time(bp)`` when the
    record is opened).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

__all__ = [
    "RefRecord",
    "SteimRefEncoder",
    "decode_steim",
    "steim_differences",
]

WORDS_PER_FRAME = 16
FRAME_BYTES = 64

STEIM2_MIN_DIFF = -(1 << 29)
STEIM2_MAX_DIFF = (1 << 29) - 1


def _int32(value: int) -> int:
    """Wrap an arbitrary Python int to a signed 32-bit value (C int32_t)."""
    return ((value + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _signed(value: int, bits: int) -> int:
    """Interpret the low ``bits`` bits of ``value`` as two's complement."""
    value &= (1 << bits) - 1
    if value & (1 << (bits - 1)):
        value -= 1 << bits
    return value


# ---------------------------------------------------------------------------
# Word formats
# ---------------------------------------------------------------------------

# Steim2: differences per word -> (nibble, dnib or None, bits per difference)
_STEIM2_FORMATS = {
    7: (3, 2, 4),
    6: (3, 1, 5),
    5: (3, 0, 6),
    4: (1, None, 8),
    3: (2, 3, 10),
    2: (2, 2, 15),
    1: (2, 1, 30),
}

# Steim1: differences per word -> (nibble, bits per difference)
_STEIM1_FORMATS = {
    4: (1, 8),
    2: (2, 16),
    1: (3, 32),
}


def _steim2_fit(diff: int) -> int:
    """How many Steim2 differences of this size fit into one word."""
    if diff < -16384 or diff > 16383:
        return 1
    if diff < -512 or diff > 511:
        return 2
    if diff < -128 or diff > 127:
        return 3
    if diff < -32 or diff > 31:
        return 4
    if diff < -16 or diff > 15:
        return 5
    if diff < -8 or diff > 7:
        return 6
    return 7


def _steim1_fit(diff: int) -> int:
    """How many Steim1 differences of this size fit into one word."""
    if diff < -32768 or diff > 32767:
        return 1
    if diff < -128 or diff > 127:
        return 2
    return 4


def _pack_fields(values: Iterable[int], bits: int) -> int:
    """Concatenate two's-complement fields, first value in the highest bits."""
    word = 0
    mask = (1 << bits) - 1
    for value in values:
        word = (word << bits) | (value & mask)
    return word


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass
class RefRecord:
    """One encoded data area as SeisComP would queue it."""

    data: bytes
    """``frames_per_record * 64`` bytes of big-endian Steim frames."""
    nsamples: int
    """Number of differences (= samples) stored in the record."""
    nframes: int
    """Frames used; a partly used frame is counted (blockette 1001 value)."""
    first_sample_index: int
    """Index in the input stream of the record's first sample (X0)."""
    clamped: int = 0
    """Number of (Steim2) differences in this record that were clamped."""
    x0: int = 0
    """Forward integration constant (frame 0, word 1)."""
    xn: int = 0
    """Reverse integration constant (frame 0, word 2)."""
    completed_after: int = 0
    """Samples fed to the encoder when the record was queued.  For a full
    record this is one past the index of the sample whose arrival emitted the
    record's last word (records complete *before* the next sample is taken),
    which decides the record's position in the station's sequence."""
    flushed: bool = False
    """True if the record was queued by ``flush`` (possibly partial)."""


class _RecordUnderConstruction:
    """The record SeisComP calls ``current_packet`` while it is being filled."""

    def __init__(self, frames: int, x0: int, first_sample_index: int):
        self.frames = frames
        # All words of all frames, zero-initialised like SeisComP's memset.
        self.words: List[List[int]] = [[0] * WORDS_PER_FRAME for _ in range(frames)]
        self.words[0][1] = x0 & 0xFFFFFFFF
        self.x0 = x0
        self.first_sample_index = first_sample_index
        self.frame = 0          # frame currently being filled
        self.word = 3           # next data word inside that frame (1..15)
        self.nsamples = 0
        self.clamped = 0

    @property
    def full(self) -> bool:
        return self.frame == self.frames

    def put(self, nibble: int, word: int) -> None:
        """Store one data word and its 2-bit code in the frame's nibble word."""
        frame = self.words[self.frame]
        frame[self.word] = word & 0xFFFFFFFF
        frame[0] |= nibble << (30 - 2 * self.word)
        self.word += 1
        if self.word == WORDS_PER_FRAME:
            self.word = 1
            self.frame += 1

    def used_frames(self) -> int:
        return self.frame + (1 if self.word > 1 else 0)

    def finish(self, xn: int, completed_after: int, flushed: bool) -> RefRecord:
        self.words[0][2] = xn & 0xFFFFFFFF
        flat = [w for frame in self.words for w in frame]
        return RefRecord(
            data=struct.pack(">%dI" % len(flat), *flat),
            nsamples=self.nsamples,
            nframes=self.used_frames(),
            first_sample_index=self.first_sample_index,
            clamped=self.clamped,
            x0=self.x0,
            xn=_int32(xn),
            completed_after=completed_after,
            flushed=flushed,
        )


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------


class SteimRefEncoder:
    """Sample-by-sample model of SeisComP's Steim1/Steim2 encoder.

    ``feed`` returns the records completed while feeding, ``flush`` the
    remaining (possibly partial) record(s).  See the module docstring for the
    exact rules.
    """

    def __init__(self, level: int, frames_per_record: int = 7, prev_sample: int = 0):
        if level not in (1, 2):
            raise ValueError("level must be 1 or 2")
        if frames_per_record < 1:
            raise ValueError("frames_per_record must be >= 1")
        self.level = level
        self.frames_per_record = frames_per_record
        self._fit = _steim2_fit if level == 2 else _steim1_fit
        self._max_cap = 7 if level == 2 else 4
        self._last = _int32(prev_sample)
        # Buffered differences and, in parallel, whether each was clamped.
        self._buf: List[int] = []
        self._buf_clamped: List[bool] = []
        # SeisComP's constructors initialise the cap to 4 for both levels.
        self._cap = 4
        self._fed = 0               # samples fed so far (stream index of next)
        self._record: Optional[_RecordUnderConstruction] = None
        self.total_clamped = 0

    # -- state helpers -----------------------------------------------------

    @property
    def last_sample(self) -> int:
        return self._last

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _cap_of(self, diffs: List[int]) -> int:
        cap = self._max_cap
        for d in diffs:
            cap = min(cap, self._fit(d))
        return cap

    def _store(self, sample: int) -> None:
        sample = _int32(sample)
        diff = _int32(sample - self._last)
        self._last = sample
        clamped = False
        if self.level == 2:
            if diff < STEIM2_MIN_DIFF:
                diff, clamped = STEIM2_MIN_DIFF, True
            elif diff > STEIM2_MAX_DIFF:
                diff, clamped = STEIM2_MAX_DIFF, True
        if clamped:
            self.total_clamped += 1
        self._buf.append(diff)
        self._buf_clamped.append(clamped)
        self._cap = min(self._cap, self._fit(diff))
        self._fed += 1

    def _open_record(self) -> None:
        x0 = _int32(self._last - sum(self._buf[1:]))
        first = self._fed - len(self._buf)
        self._record = _RecordUnderConstruction(self.frames_per_record, x0, first)

    def _close_record(self, flushed: bool) -> RefRecord:
        assert self._record is not None
        xn = _int32(self._last - sum(self._buf))
        record = self._record.finish(xn, self._fed, flushed)
        self._record = None
        return record

    def _words_for(self) -> int:
        """How many buffered differences the next word takes."""
        n = len(self._buf)
        cap = self._cap
        while n > cap:
            n -= 1
            cap = self._cap_of(self._buf[:n])
        if self.level == 1:
            # Round down to a power of two: 3 -> 2.
            while n < cap:
                cap >>= 1
            n = cap
        return n

    def _emit_word(self) -> None:
        rec = self._record
        assert rec is not None
        n = self._words_for()
        diffs = self._buf[:n]
        if self.level == 2:
            nibble, dnib, bits = _STEIM2_FORMATS[n]
            word = _pack_fields(diffs, bits)
            if dnib is not None:
                word |= dnib << 30
        else:
            nibble, bits = _STEIM1_FORMATS[n]
            word = _pack_fields(diffs, bits)
        rec.put(nibble, word)
        rec.nsamples += n
        rec.clamped += sum(self._buf_clamped[:n])
        del self._buf[:n]
        del self._buf_clamped[:n]
        self._cap = self._cap_of(self._buf)

    def _emit_one(self, out: List[RefRecord], flushing: bool) -> None:
        if self._record is None:
            self._open_record()
        self._emit_word()
        if self._record.full:
            out.append(self._close_record(flushing))

    # -- public API --------------------------------------------------------

    def feed(self, samples: Iterable[int]) -> List[RefRecord]:
        """Encode samples; return the records completed on the way."""
        out: List[RefRecord] = []
        for sample in samples:
            self._store(int(sample))
            while len(self._buf) >= self._cap:
                self._emit_one(out, False)
        return out

    def flush(self) -> List[RefRecord]:
        """Emit everything buffered and return the open record(s), if any."""
        out: List[RefRecord] = []
        while self._buf:
            self._emit_one(out, True)
        if self._record is not None:
            out.append(self._close_record(True))
        return out


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------


def _word_differences(level: int, nibble: int, word: int) -> List[int]:
    if nibble == 0:
        return []
    if level == 1:
        if nibble == 1:
            return [_signed(word >> s, 8) for s in (24, 16, 8, 0)]
        if nibble == 2:
            return [_signed(word >> 16, 16), _signed(word, 16)]
        return [_signed(word, 32)]
    if nibble == 1:
        return [_signed(word >> s, 8) for s in (24, 16, 8, 0)]
    dnib = word >> 30
    if nibble == 2:
        if dnib == 1:
            return [_signed(word, 30)]
        if dnib == 2:
            return [_signed(word >> 15, 15), _signed(word, 15)]
        if dnib == 3:
            return [_signed(word >> s, 10) for s in (20, 10, 0)]
        raise ValueError("invalid Steim2 dnib 00 for nibble 10")
    # nibble == 3
    if dnib == 0:
        return [_signed(word >> s, 6) for s in (24, 18, 12, 6, 0)]
    if dnib == 1:
        return [_signed(word >> s, 5) for s in (25, 20, 15, 10, 5, 0)]
    if dnib == 2:
        return [_signed(word >> s, 4) for s in (24, 20, 16, 12, 8, 4, 0)]
    raise ValueError("invalid Steim2 dnib 11 for nibble 11")


def steim_differences(data: bytes, level: int) -> Tuple[int, int, List[int]]:
    """Return ``(X0, Xn, differences)`` of a Steim data area (all frames)."""
    if level not in (1, 2):
        raise ValueError("level must be 1 or 2")
    if len(data) % FRAME_BYTES:
        raise ValueError("data length is not a multiple of 64")
    words = struct.unpack(">%dI" % (len(data) // 4), data)
    x0 = _signed(words[1], 32) if words else 0
    xn = _signed(words[2], 32) if words else 0
    diffs: List[int] = []
    for f in range(len(data) // FRAME_BYTES):
        frame = words[f * WORDS_PER_FRAME:(f + 1) * WORDS_PER_FRAME]
        nibbles = frame[0]
        for w in range(1, WORDS_PER_FRAME):
            if f == 0 and w in (1, 2):
                continue
            code = (nibbles >> (30 - 2 * w)) & 3
            diffs.extend(_word_differences(level, code, frame[w]))
    return x0, xn, diffs


def decode_steim(data: bytes, nsamples: int, level: int, *, exact: bool = False) -> List[int]:
    """Decode ``nsamples`` samples from a Steim1/2 data area.

    The first difference is ignored (it refers to the previous record) and
    the series is integrated from X0.  Raises ``ValueError`` if the frames
    hold fewer than ``nsamples`` differences, if the last decoded sample
    differs from Xn, or (``exact=True``) if the frames hold *more*
    differences than ``nsamples`` (SeisComP never writes surplus ones).
    """
    if nsamples < 0:
        raise ValueError("negative sample count")
    if nsamples == 0:
        return []
    x0, xn, diffs = steim_differences(data, level)
    if len(diffs) < nsamples:
        raise ValueError(
            "frames hold %d differences, header says %d samples" % (len(diffs), nsamples))
    if exact and len(diffs) != nsamples:
        raise ValueError(
            "frames hold %d differences, expected exactly %d" % (len(diffs), nsamples))
    samples = [x0]
    value = x0
    for d in diffs[1:nsamples]:
        value = _int32(value + d)
        samples.append(value)
    if samples[-1] != xn:
        raise ValueError("last sample %d does not match Xn %d" % (samples[-1], xn))
    return samples
