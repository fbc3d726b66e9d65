# Steim1 / Steim2 codec core, shared by the kernels that `include` it.
#
# Everything here is C-level (structs and noexcept nogil functions); no cdef
# classes, so that several extension modules can include it (README,
# "Architecture": cdef classes cannot be cimported across these modules).
#
# The encoder reproduces the packing of SeisComP's seedlink encoders word for
# word, because SeedLink clients compare records byte for byte:
#
# * Differences are buffered.  For each buffered difference we know its "fit
#   category": how many differences of that size share one 32-bit word
#   (Steim2: 7, 6, 5, 4, 3, 2, 1; Steim1: 4, 2, 1).  A word is emitted as soon
#   as the number of buffered differences reaches the smallest category among
#   them ("cap").  The word then takes the longest prefix whose own cap is at
#   least its length; Steim1 rounds that length down to 4, 2 or 1.
# * A fresh Steim2 encoder starts with cap 4, so the very first word of its
#   life holds at most four differences (a quirk of SeisComP we keep).
# * Steim2 differences outside [-2**29, 2**29) are clamped (lossy); the
#   reference sample values X0/Xn are then derived from the clamped
#   differences exactly as SeisComP does.
#
# Working on a whole block at a time, the trigger rule reduces to: for a word
# starting at difference p, k is the first n with n >= min(cap0, c[p..p+n-1]);
# the word takes k differences when that minimum equals k, else k - 1.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, int16_t, uint16_t
from libc.string cimport memset, memcpy

cdef extern from *:
    """
    #include <stdint.h>
    #include <math.h>
    /* Fit categories, indexed by the number of bits a difference needs as a
       signed integer (1..32).  Steim2 widths 4, 5, 6, 8, 10, 15, 30 bits hold
       7, 6, 5, 4, 3, 2, 1 differences per word; wider ones fit nowhere and
       are clamped to 30 bits. */
    static const uint8_t SL_STEIM2_CAT[33] = {
        7, 7, 7, 7, 7, 6, 5, 4, 4, 3, 3, 2, 2, 2, 2, 2,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    static const uint8_t SL_STEIM1_CAT[33] = {
        4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2,
        2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    /* Bits needed to hold v as a two's complement integer, branch-free. */
    static inline int sl_signed_bits(int32_t v) {
        uint32_t m = (uint32_t)v ^ (uint32_t)(v >> 31);
        return m ? 33 - __builtin_clz(m) : 1;
    }
    static inline uint32_t sl_bswap32(uint32_t v) { return __builtin_bswap32(v); }

    /* Differences (two's complement wrap-around) and their fit categories
       for n samples, the first against prev.  Written as independent
       compares so that the compiler vectorises both loops.  Returns the
       number of Steim2 differences that need clamping (category 0). */
    static inline int sl_diffs_categories(const int32_t *restrict x, int n, int32_t prev,
                                          int32_t *restrict d, uint8_t *restrict cat,
                                          int level) {
        int i, wide = 0;
        if (n <= 0) return 0;
        d[0] = (int32_t)((uint32_t)x[0] - (uint32_t)prev);
        for (i = 1; i < n; i++)
            d[i] = (int32_t)((uint32_t)x[i] - (uint32_t)x[i - 1]);
        if (level == 2) {
            for (i = 0; i < n; i++) {
                uint32_t m = (uint32_t)d[i] ^ (uint32_t)(d[i] >> 31);
                int c = 7 - (m > 7) - (m > 15) - (m > 31) - (m > 127) - (m > 511)
                          - (m > 16383) - (m > 536870911);
                cat[i] = (uint8_t)c;
                wide += (c == 0);
            }
        } else {
            for (i = 0; i < n; i++) {
                uint32_t m = (uint32_t)d[i] ^ (uint32_t)(d[i] >> 31);
                cat[i] = (uint8_t)(4 - 2 * (m > 127) - (m > 32767));
            }
        }
        return wide;
    }

    /* The packing trigger for a word starting at categories c[0..]: the
       first n (1..8) with n >= min(cap0, c[0..n-1]), among the first
       `avail` categories; 0 when there is none.  *mn receives that prefix
       minimum.  Branch-free SWAR: byte-wise prefix minimum in three steps,
       then one compare against 1..8 and a count of trailing zeros. */
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline int sl_trigger(const uint8_t *c, int avail, int cap0, int *mn) {
        uint64_t raw, lanes;
        if (c[0] == 1 && avail > 0) { *mn = 1; return 1; }   /* a 30-bit difference */
        memcpy(&raw, c, 8);
        __m128i pm = _mm_cvtsi64_si128((long long)raw);
        pm = _mm_min_epu8(pm, _mm_or_si128(_mm_slli_epi64(pm, 8), _mm_cvtsi32_si128(0xFF)));
        pm = _mm_min_epu8(pm, _mm_or_si128(_mm_slli_epi64(pm, 16), _mm_cvtsi32_si128(0xFFFF)));
        pm = _mm_min_epu8(pm, _mm_or_si128(_mm_slli_epi64(pm, 32),
                                           _mm_cvtsi64_si128(0xFFFFFFFFLL)));
        pm = _mm_min_epu8(pm, _mm_set1_epi8((char)cap0));
        const __m128i idx = _mm_setr_epi8(1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9, 9);
        int lim = avail < 8 ? avail : 8;
        int bits = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(idx, pm), idx));
        bits &= (1 << lim) - 1;
        lanes = (uint64_t)_mm_cvtsi128_si64(pm);
        if (!bits) {
            *mn = lim > 0 ? (int)((lanes >> (8 * (lim - 1))) & 0xFF) : cap0;
            return 0;
        }
        int k = __builtin_ctz(bits);
        *mn = (int)((lanes >> (8 * k)) & 0xFF);
        return k + 1;
    }
    #else
    static inline int sl_trigger(const uint8_t *c, int avail, int cap0, int *mn) {
        int n, m = cap0, lim = avail < 8 ? avail : 8;
        for (n = 0; n < lim; n++) {
            if (c[n] < m) m = c[n];
            if (n + 1 >= m) { *mn = m; return n + 1; }
        }
        *mn = m;
        return 0;
    }
    #endif

    /* SeisComP's clock arithmetic (slutils qtime add_dtime and SPClock),
       reproduced operation for operation because record start times come
       from it: a time is (seconds since the epoch, microseconds), adding a
       double number of microseconds floors to a whole microsecond. */
    typedef struct { int64_t sec; int usec; } sl_time_t;
    static inline sl_time_t sl_add_dtime(sl_time_t it, double usecs) {
        long long secs = (long long)floor((it.usec + usecs) / 1000000.0);
        usecs += it.usec - secs * 1000000.0;
        it.sec += secs;
        it.usec = (int)usecs;
        return it;
    }
    /* time of the sample tick_diff samples before the clock's position, for a
       clock that has counted `count` samples since it was last synchronised */
    static inline sl_time_t sl_clock_time(sl_time_t anchor, int64_t count,
                                          int tick_diff, int freqn, int freqd) {
        int seconds = (int)(count / freqn) * freqd;
        int ticks = (int)(count % freqn);
        return sl_add_dtime(anchor, 1000000 * ((double)seconds +
            (double)(ticks - tick_diff) * (double)freqd / (double)freqn));
    }
    """
    const uint8_t *SL_STEIM2_CAT
    const uint8_t *SL_STEIM1_CAT
    int sl_signed_bits(int32_t v) noexcept nogil
    uint32_t sl_bswap32(uint32_t v) noexcept nogil
    int sl_trigger(const uint8_t *c, int avail, int cap0, int *mn) noexcept nogil
    int sl_diffs_categories(const int32_t *x, int n, int32_t prev, int32_t *d, uint8_t *cat,
                            int level) noexcept nogil
    ctypedef struct sl_time_t:
        int64_t sec
        int usec
    sl_time_t sl_add_dtime(sl_time_t it, double usecs) noexcept nogil
    sl_time_t sl_clock_time(sl_time_t anchor, int64_t count, int tick_diff,
                            int freqn, int freqd) noexcept nogil

cdef enum:
    STEIM_MAX_FRAMES = 63        # 4096-byte records hold 63 data frames
    STEIM_BLOCK = 4096           # samples handled per inner block
    STEIM2_MIN = -536870912      # Steim2 30-bit difference range
    STEIM2_MAX = 536870911

# Steim2 word layouts, by number of differences per word (index 1..7):
# bits per difference, the 2-bit nibble code and the 2-bit "dnib" prefix.
cdef int *STEIM2_BITS = [0, 30, 15, 10, 8, 6, 5, 4]
cdef uint32_t *STEIM2_NIB = [0, 2, 2, 2, 1, 3, 3, 3]
cdef uint32_t *STEIM2_DNIB = [0, 1, 2, 3, 0, 0, 1, 2]


ctypedef struct steim_rec_t:
    int64_t first_index     # stream index (samples since the encoder began) of its first sample
    int64_t done_index      # stream index of the sample whose arrival completed it
    int32_t nsamples        # samples in the record
    int32_t nframes         # frames used, a partly filled frame counted
    sl_time_t start         # SeisComP clock time of the first sample (clock mode only)
    int32_t corr            # usec_correction and timing quality in force when it opened
    int32_t qual


ctypedef struct steim_enc_t:
    int level               # 1 = Steim1, 2 = Steim2
    int nframes             # data frames per record (7 for 512-byte records)
    int32_t last_sample     # last sample stored; the next difference is taken against it
    int first_word          # 1 until the first word is emitted (Steim2 caps it at 4)
    int64_t nstored         # samples stored since the encoder began
    int64_t nclamped        # Steim2 differences clamped to 30 bits
    # SeisComP's encoder clock (used when freqn > 0): synchronised to its node
    # on every time packet, it stamps a record when the record opens
    int freqn               # sample rate freqn/freqd Hz
    int freqd
    sl_time_t anchor        # time of sample sync_index
    int64_t sync_index
    int32_t corr            # usec_correction / timing quality from the last sync
    int32_t qual
    # differences stored but not yet packed (at most 7), oldest first
    int npend
    int32_t pend_d[8]       # differences (clamped)
    int32_t pend_s[8]       # the samples they lead to
    uint8_t pend_c[8]       # their fit categories
    # the open record
    int rec_open
    int fp                  # next word slot in the current frame (1..15)
    int frame_count         # frames completed in the open record
    uint32_t nibble_word
    int32_t rec_samples
    int64_t rec_first
    sl_time_t rec_start
    int32_t rec_corr
    int32_t rec_qual
    uint32_t words[STEIM_MAX_FRAMES * 16]   # the frames, host byte order
    # scratch for one block: pending + new differences
    int32_t sd[STEIM_BLOCK + 8]
    int32_t ss[STEIM_BLOCK + 8]
    uint8_t sc[STEIM_BLOCK + 16]    # +8 slack: the trigger search reads 8 at a time


cdef int steim_enc_init(steim_enc_t *enc, int level, int nframes, int32_t prev_sample) noexcept nogil:
    """Reset *enc* to a fresh encoder. Returns 0, or -1 for bad arguments."""
    if (level != 1 and level != 2) or nframes < 1 or nframes > STEIM_MAX_FRAMES:
        return -1
    enc.level = level
    enc.nframes = nframes
    enc.last_sample = prev_sample
    enc.first_word = 1
    enc.nstored = 0
    enc.nclamped = 0
    enc.npend = 0
    enc.rec_open = 0
    enc.rec_samples = 0
    enc.rec_first = 0
    enc.freqn = 0
    enc.freqd = 1
    enc.anchor.sec = 0
    enc.anchor.usec = 0
    enc.sync_index = 0
    enc.corr = 0
    enc.qual = -1
    return 0


cdef void steim_enc_sync(steim_enc_t *enc, sl_time_t t, int corr, int qual) noexcept nogil:
    """Synchronise the encoder clock: the next sample stored has time t."""
    enc.anchor = t
    enc.sync_index = enc.nstored
    enc.corr = corr
    enc.qual = qual


cdef inline int32_t _wrap_sub(int32_t a, int32_t b) noexcept nogil:
    # a - b with two's complement wrap-around, as SeisComP's int arithmetic does
    return <int32_t>(<uint32_t>a - <uint32_t>b)


cdef inline int32_t _wrap_add(int32_t a, int32_t b) noexcept nogil:
    return <int32_t>(<uint32_t>a + <uint32_t>b)


cdef inline void _open_record(steim_enc_t *enc, int p, int t, int64_t base) noexcept nogil:
    # X0: the sample of difference p, derived from the newest stored sample
    # (index t) and the buffered differences in between, as SeisComP does.
    cdef int32_t x0 = enc.ss[t]
    cdef int i
    for i in range(p + 1, t + 1):
        x0 = _wrap_sub(x0, enc.sd[i])
    memset(enc.words, 0, enc.nframes * 64)
    enc.words[1] = <uint32_t>x0
    enc.rec_open = 1
    enc.fp = 3
    enc.frame_count = 0
    enc.nibble_word = 0
    enc.rec_samples = 0
    enc.rec_first = base + p
    if enc.freqn > 0:
        # SeisComP: get_time(bp) on a clock that has ticked for every stored sample
        enc.rec_start = sl_clock_time(enc.anchor, base + t + 1 - enc.sync_index,
                                      t - p + 1, enc.freqn, enc.freqd)
    enc.rec_corr = enc.corr
    enc.rec_qual = enc.qual


cdef inline void _finish_record(steim_enc_t *enc, int q, int t, int64_t base, uint8_t *out,
                                steim_rec_t *info) noexcept nogil:
    # Xn: the newest stored sample minus the differences not yet packed
    # (q..t), then the frames go out big-endian.
    cdef int32_t xn = enc.ss[t]
    cdef int i
    cdef uint32_t *dst = <uint32_t *>out
    for i in range(q, t + 1):
        xn = _wrap_sub(xn, enc.sd[i])
    enc.words[2] = <uint32_t>xn
    for i in range(enc.nframes * 16):
        dst[i] = sl_bswap32(enc.words[i])
    info.first_index = enc.rec_first
    info.done_index = base + t
    info.nsamples = enc.rec_samples
    info.start = enc.rec_start
    info.corr = enc.rec_corr
    info.qual = enc.rec_qual
    info.nframes = enc.frame_count + (1 if enc.fp > 1 else 0)
    enc.rec_open = 0


cdef inline int _put_word(steim_enc_t *enc, int p, int used) noexcept nogil:
    # Pack differences p..p+used-1 into one word of the open record.
    # Returns 1 when the record is now full.
    cdef uint32_t word = 0, nib, mask
    cdef int i, bits
    cdef int32_t *d = &enc.sd[p]
    if enc.level == 2:
        bits = STEIM2_BITS[used]
        mask = (1u << bits) - 1u
        for i in range(used):
            word = (word << bits) | (<uint32_t>d[i] & mask)
        if used != 4:
            word |= STEIM2_DNIB[used] << 30
        nib = STEIM2_NIB[used]
    else:
        if used == 4:
            word = ((<uint32_t>d[0] & 0xff) << 24) | ((<uint32_t>d[1] & 0xff) << 16) | \
                   ((<uint32_t>d[2] & 0xff) << 8) | (<uint32_t>d[3] & 0xff)
            nib = 1
        elif used == 2:
            word = ((<uint32_t>d[0] & 0xffff) << 16) | (<uint32_t>d[1] & 0xffff)
            nib = 2
        else:
            word = <uint32_t>d[0]
            nib = 3
    cdef int base = enc.frame_count * 16
    enc.nibble_word |= nib << (30 - 2 * enc.fp)
    enc.words[base] = enc.nibble_word
    enc.words[base + enc.fp] = word
    enc.rec_samples += used
    enc.fp += 1
    if enc.fp == 16:
        enc.fp = 1
        enc.nibble_word = 0
        enc.frame_count += 1
        return enc.frame_count == enc.nframes
    return 0


cdef inline int _steim1_round(int u) noexcept nogil:
    # Steim1 words hold 4, 2 or 1 differences: round down.
    if u >= 4:
        return 4
    if u >= 2:
        return 2
    return 1


cdef Py_ssize_t _pack_block(steim_enc_t *enc, int m, int flushing, uint8_t *out,
                            steim_rec_t *info) noexcept nogil:
    # Pack the m differences in the scratch block into words.  Differences that
    # do not yet trigger a word stay pending (unless flushing).  Returns the
    # number of records completed, written to out/info.  Scratch position 0
    # is stream index enc.nstored - m.
    cdef int64_t base = enc.nstored - m
    cdef int p = 0, n, k, used, t, cap0, maxw
    cdef int cat, mn
    cdef Py_ssize_t nrec = 0
    cdef int datalen = enc.nframes * 64
    maxw = 7 if enc.level == 2 else 4
    while p < m:
        cap0 = 4 if (enc.first_word and enc.level == 2) else maxw
        # the trigger point: first n with n >= the minimum category so far
        n = sl_trigger(&enc.sc[p], m - p, cap0, &mn)
        if n == 0:
            # not triggered: the rest waits for more samples, or is flushed
            if not flushing:
                break
            k = m - p
            used = k
            t = m - 1
        else:
            k = n
            used = k if mn == k else k - 1
            t = p + k - 1
        if enc.level == 1:
            used = _steim1_round(used)
        if not enc.rec_open:
            _open_record(enc, p, t, base)
        enc.first_word = 0
        if _put_word(enc, p, used):
            _finish_record(enc, p + used, t, base, out + nrec * datalen, &info[nrec])
            nrec += 1
        p += used
    # keep what is left for the next block
    enc.npend = m - p
    for n in range(enc.npend):
        enc.pend_d[n] = enc.sd[p + n]
        enc.pend_s[n] = enc.ss[p + n]
        enc.pend_c[n] = enc.sc[p + n]
    return nrec


cdef Py_ssize_t steim_max_records(int nframes, Py_ssize_t nsamples) noexcept nogil:
    """Upper bound on records produced by pushing nsamples (plus a flush)."""
    # worst case one difference per word: 13 in frame 0, 15 in the others
    cdef Py_ssize_t per_record = 13 + 15 * (nframes - 1)
    return nsamples // per_record + 3


cdef Py_ssize_t steim_enc_push(steim_enc_t *enc, const int32_t *x, Py_ssize_t n,
                               uint8_t *out, steim_rec_t *info) noexcept nogil:
    """Feed n samples.  Completed records' frames go to out (nframes*64 bytes
    each) and their descriptions to info; the caller sizes both with
    steim_max_records().  Returns the number of records completed."""
    cdef Py_ssize_t done = 0, nrec = 0
    cdef int m, i, j, bits
    cdef int32_t prev, d
    cdef const uint8_t *table = SL_STEIM2_CAT if enc.level == 2 else SL_STEIM1_CAT
    cdef int datalen = enc.nframes * 64
    while done < n:
        m = enc.npend
        for i in range(m):
            enc.sd[i] = enc.pend_d[i]
            enc.ss[i] = enc.pend_s[i]
            enc.sc[i] = enc.pend_c[i]
        j = <int>(n - done) if n - done < STEIM_BLOCK else STEIM_BLOCK
        prev = enc.last_sample
        memcpy(&enc.ss[m], &x[done], j * sizeof(int32_t))
        if sl_diffs_categories(&x[done], j, prev, &enc.sd[m], &enc.sc[m], enc.level):
            # clamp what Steim2 cannot hold (category 0), as SeisComP does
            for i in range(m, m + j):
                if enc.sc[i] == 0:
                    enc.sd[i] = STEIM2_MIN if enc.sd[i] < 0 else STEIM2_MAX
                    enc.sc[i] = 1
                    enc.nclamped += 1
        prev = x[done + j - 1]
        enc.last_sample = prev
        enc.nstored += j
        done += j
        nrec += _pack_block(enc, m + j, 0, out + nrec * datalen, &info[nrec])
    return nrec


cdef Py_ssize_t steim_enc_flush(steim_enc_t *enc, uint8_t *out, steim_rec_t *info) noexcept nogil:
    """Pack every pending difference and close the open record (partial, its
    unused frames zero).  Returns the number of records (0, 1 or 2)."""
    cdef int i, m = enc.npend
    cdef Py_ssize_t nrec
    for i in range(m):
        enc.sd[i] = enc.pend_d[i]
        enc.ss[i] = enc.pend_s[i]
        enc.sc[i] = enc.pend_c[i]
    nrec = _pack_block(enc, m, 1, out, info)
    if enc.rec_open:
        # every difference is packed now; Xn is the last stored sample
        enc.ss[0] = enc.last_sample
        _finish_record(enc, 1, 0, enc.nstored - 1, out + nrec * enc.nframes * 64,
                       &info[nrec])
        nrec += 1
    return nrec


# ---------------------------------------------------------------------------
# Decoder

cdef enum:
    STEIM_ERR_SHORT = -1     # the frames hold fewer differences than nsamples
    STEIM_ERR_XN = -2        # last sample differs from the Xn check value
    STEIM_ERR_CODE = -3      # an invalid Steim2 sub-code (dnib)


cdef inline uint32_t _load_be(const uint8_t *p, int swap) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return sl_bswap32(v) if swap else v


cdef inline void _unpack_n(uint32_t word, int count, int bits, int32_t *out,
                           Py_ssize_t *cnt, Py_ssize_t nsamples) noexcept nogil:
    # count sign-extended fields of `bits` bits, most significant first
    cdef int i, shift = 32 - bits
    cdef int32_t v
    for i in range(count):
        if cnt[0] >= nsamples:
            return
        v = <int32_t>(word << (32 - bits * (count - i)))
        out[cnt[0]] = v >> shift
        cnt[0] += 1


cdef Py_ssize_t steim_decode(const uint8_t *data, int nframes, int level,
                             Py_ssize_t nsamples, int32_t *out,
                             int big_endian) noexcept nogil:
    """Decode nsamples from nframes Steim frames into out.  Returns nsamples,
    or a negative STEIM_ERR_* code."""
    cdef int f, w, code, dnib, swap = big_endian
    cdef uint32_t nibbles, word
    cdef Py_ssize_t cnt = 0, i
    cdef int32_t x0 = 0, xn = 0
    cdef const uint8_t *frame
    if nsamples <= 0:
        return 0
    for f in range(nframes):
        frame = data + 64 * f
        nibbles = _load_be(frame, swap)
        for w in range(1, 16):
            if cnt >= nsamples:
                break
            word = _load_be(frame + 4 * w, swap)
            if f == 0 and w == 1:
                x0 = <int32_t>word
                continue
            if f == 0 and w == 2:
                xn = <int32_t>word
                continue
            code = (nibbles >> (30 - 2 * w)) & 3
            if code == 0:
                continue
            if code == 1:
                # four 8-bit differences (both levels), in memory order
                for i in range(4):
                    if cnt < nsamples:
                        out[cnt] = <int32_t>(<signed char>frame[4 * w + i])
                        cnt += 1
            elif level == 1:
                if code == 2:
                    # two 16-bit differences; little-endian data swaps each
                    # half on its own (libmseed's layout), so they stay in order
                    for i in range(2):
                        if cnt < nsamples:
                            if big_endian:
                                out[cnt] = <int32_t>(<int16_t>((word >> (16 - 16 * i)) & 0xffff))
                            else:
                                out[cnt] = <int32_t>(<int16_t>((word >> (16 * i)) & 0xffff))
                            cnt += 1
                else:
                    out[cnt] = <int32_t>word
                    cnt += 1
            else:
                dnib = word >> 30
                if code == 2:
                    if dnib == 1:
                        _unpack_n(word, 1, 30, out, &cnt, nsamples)
                    elif dnib == 2:
                        _unpack_n(word, 2, 15, out, &cnt, nsamples)
                    elif dnib == 3:
                        _unpack_n(word, 3, 10, out, &cnt, nsamples)
                    else:
                        return STEIM_ERR_CODE
                else:
                    if dnib == 0:
                        _unpack_n(word, 5, 6, out, &cnt, nsamples)
                    elif dnib == 1:
                        _unpack_n(word, 6, 5, out, &cnt, nsamples)
                    elif dnib == 2:
                        _unpack_n(word, 7, 4, out, &cnt, nsamples)
                    else:
                        return STEIM_ERR_CODE
        if cnt >= nsamples:
            break
    if cnt < nsamples:
        return STEIM_ERR_SHORT
    # the first difference refers to the previous record; X0 replaces it
    out[0] = x0
    for i in range(1, nsamples):
        out[i] = _wrap_add(out[i - 1], out[i])
    if out[nsamples - 1] != xn:
        return STEIM_ERR_XN
    return nsamples


