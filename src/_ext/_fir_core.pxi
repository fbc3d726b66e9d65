# Streaming FIR decimator core: a C struct and nogil functions, no cdef classes.
#
# Included by fir.pyx (FirDecimator) and by the stream processor module, which
# also includes the Steim core: cdef classes cannot be cimported between the
# modules in src/_ext, so shared kernels are include files.  Every C name
# starts with fir_ / FIR_ (internal helpers fir__ / FIR__).
#
# Numerics are those of SeisComP seedlink (apps/seedlink/filterimpl.h,
# FilterImpl::apply):
#
#     double acc = 0;  for i in 0..L-1:  acc += *(p++) * points[i] * gain;
#
# C's * is left associative, so every term is (x[kD+i] * c[i]) * gain, rounded
# after each multiply, and the terms are added to acc one by one in ascending
# i, starting from 0.0.  x[kD] is the oldest sample of window k (the first
# window is the first L samples after init/reset) and c is the full tap list
# (symmetric filters expanded, minimum-phase filters in file order).  The
# kernels below reproduce this bit for bit:
#   * the SIMD paths put different *outputs* in different vector lanes, so
#     each lane does exactly the scalar sequence of roundings;
#   * gain is never folded into the taps, (x*c)*g is not x*(c*g) in general;
#     only gain == 1.0 skips the second multiply, which is then exact;
#   * every product passes through FIR_OPAQUE, an empty asm statement that
#     forces it into a register, so no compiler can fuse multiply and add
#     into an FMA even if a build drops -ffp-contract=off or targets FMA.
#
# Storage (polyphase rows): pending input is kept deinterleaved in D rows of
# `stride` doubles, sample number a (counted from the last reset, minus what
# compaction dropped) in row a % D at column a / D.  Window starts are
# multiples of D, so tap i of output k is at row i % D, column k + i / D
# (relative to the window of output 0): W consecutive outputs read W
# consecutive doubles, one vector load.  off[i] = (i % D) * stride + i / D is
# fixed at init.  Input is scattered into the rows as it is appended (that
# pass also converts int32), in pieces of at most FIR_BLOCK samples; after
# each piece every complete window is filtered, which leaves fewer than L
# samples pending, and the rows are compacted (about L doubles moved) only
# when the next piece would not fit: amortised O(1) per sample, no allocation
# after init.

from libc.stdint cimport int32_t

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include <stdint.h>

    /* return codes (counts are >= 0) */
    #define FIR_OK        0
    #define FIR_ENOMEM   (-1)   /* malloc failed; the stage is left freed (all zero) */
    #define FIR_EINVAL   (-2)   /* bad arguments, or stage not initialised */
    #define FIR_EOUTCAP  (-3)   /* out_cap < fir_stage_max_out(st, n); nothing consumed */

    /* kernel levels (fir_stage_t.kernel); all give bit-identical results */
    #define FIR_KERNEL_SCALAR  0   /* plain C */
    #define FIR_KERNEL_VEC128  1   /* 2 x double (SSE2 on x86-64, NEON on arm64) */
    #define FIR_KERNEL_AVX2    2   /* 4 x double, x86-64 with AVX2 (no FMA) */
    #define FIR_KERNEL_AVX512  3   /* 8 x double, x86-64 with AVX-512F (no FMA) */
    #define FIR_KERNEL_AUTO   (-1) /* fir_stage_set_kernel: best available */

    #define FIR_BLOCK   1024       /* input samples appended per filtering run (rows stay in L1) */
    #define FIR_MAX_LEN (1 << 20)  /* longest accepted filter */

    #if defined(__GNUC__) || defined(__clang__)
    #  define FIR_UNUSED __attribute__((unused))
    #else
    #  define FIR_UNUSED
    #endif

    typedef struct {
        double     *taps;       /* L taps, taps[i] weights x[kD+i] (oldest sample first) */
        int         length;     /* L >= 1 */
        int         decimation; /* D, 1 <= D <= L */
        double      gain;       /* multiplied into every term: (x*c)*gain */
        int         unit_gain;  /* gain == 1.0: the second multiply is skipped (exact) */
        int         kernel;     /* FIR_KERNEL_* used by fir_stage_process */
        double     *rows;       /* D polyphase rows of `stride` doubles: sample a at
                                   rows[(a % D) * stride + a / D] */
        Py_ssize_t  stride;     /* row length, ceil((L + FIR_BLOCK) / D) */
        Py_ssize_t  head;       /* sample number of the next window start (multiple of D) */
        Py_ssize_t  tail;       /* sample number one past the newest sample */
        Py_ssize_t *off;        /* off[i] = (i % D) * stride + i / D, L entries */
    } fir_stage_t;

    /* --------------------------------------------------------------- SIMD */

    #if defined(__GNUC__) || defined(__clang__)
    #  define FIR_HAVE_VEC 1
    typedef double fir_v2d __attribute__((vector_size(16)));
    #  if defined(__x86_64__)
    #    define FIR_HAVE_X86 1
    typedef double fir_v4d __attribute__((vector_size(32)));
    typedef double fir_v8d __attribute__((vector_size(64)));
    /* empty asm: the value must sit in a vector register here, so the
       multiply cannot be contracted with the following add into an FMA */
    #    define FIR_OPAQUE(v) __asm__("" : "+v"(v))
    #  elif defined(__aarch64__)
    #    define FIR_OPAQUE(v) __asm__("" : "+w"(v))
    #  else
    #    define FIR_OPAQUE(v) ((void)0)
    #  endif
    #else
    #  define FIR_OPAQUE(v) ((void)0)
    #endif

    /* Scalar path; also finishes the outputs k0..nout-1 the vector kernels
       leave over.  out[k] = sum_i (src[off[i] + k] * c[i]) * g, ascending i. */
    static void fir__kern_scalar(const double *src, const Py_ssize_t *off,
                                 const double *c, int L, double g, int unit,
                                 double *out, Py_ssize_t k0, Py_ssize_t nout)
    {
        Py_ssize_t k;
        int i;
        for (k = k0; k < nout; k++) {
            double acc = 0.0;
            if (unit) {
                for (i = 0; i < L; i++) {
                    double p = src[off[i] + k] * c[i];
                    FIR_OPAQUE(p);
                    acc += p;
                }
            } else {
                for (i = 0; i < L; i++) {
                    double p = src[off[i] + k] * c[i];
                    FIR_OPAQUE(p);
                    p = p * g;
                    FIR_OPAQUE(p);
                    acc += p;
                }
            }
            out[k] = acc;
        }
    }

    #ifdef FIR_HAVE_VEC
    /* Block of NB vectors of W lanes = NB*W consecutive outputs from k on,
       each lane its own ascending-i sum; inner part of FIR__DEFINE_KERNEL. */
    #define FIR__BLOCK_LOOP(VT, W, NB, UNIT)                                      \\
        for (; k + (NB) * (W) <= nout; k += (NB) * (W)) {                         \\
            VT acc[NB];                                                           \\
            for (v = 0; v < (NB); v++) acc[v] = zero;                             \\
            for (i = 0; i < L; i++) {                                             \\
                const double *s = src + off[i] + k;                               \\
                VT cv;                                                            \\
                for (j = 0; j < (W); j++) cv[j] = c[i];                           \\
                for (v = 0; v < (NB); v++) {                                      \\
                    VT xv, p;                                                     \\
                    memcpy(&xv, s + v * (W), sizeof(VT));                         \\
                    p = xv * cv;                                                  \\
                    FIR_OPAQUE(p);                                                \\
                    if (!(UNIT)) { p = p * gv; FIR_OPAQUE(p); }                   \\
                    acc[v] += p;                                                  \\
                }                                                                 \\
            }                                                                     \\
            for (v = 0; v < (NB); v++)                                            \\
                memcpy(out + k + v * (W), &acc[v], sizeof(VT));                   \\
        }

    /* One vector kernel: blocks of NV vectors, then NV2, then 1; returns the
       number of outputs done (a multiple of W), the caller finishes the rest
       with the scalar path. */
    #define FIR__DEFINE_KERNEL(NAME, ATTR, VT, W, NV, NV2, UNIT)                  \\
    ATTR static Py_ssize_t NAME(const double *src, const Py_ssize_t *off,         \\
                                const double *c, int L, double g,                 \\
                                double *out, Py_ssize_t nout)                     \\
    {                                                                             \\
        Py_ssize_t k = 0;                                                         \\
        int i, v, j;                                                              \\
        VT gv, zero;                                                              \\
        for (j = 0; j < (W); j++) { gv[j] = g; zero[j] = 0.0; }                   \\
        FIR__BLOCK_LOOP(VT, W, NV, UNIT)                                          \\
        FIR__BLOCK_LOOP(VT, W, NV2, UNIT)                                         \\
        FIR__BLOCK_LOOP(VT, W, 1, UNIT)                                           \\
        return k;                                                                 \\
    }

    #define FIR__NOATTR
    FIR__DEFINE_KERNEL(fir__kern_v128_u, FIR__NOATTR, fir_v2d, 2, 8, 4, 1)
    FIR__DEFINE_KERNEL(fir__kern_v128_g, FIR__NOATTR, fir_v2d, 2, 8, 4, 0)
    #ifdef FIR_HAVE_X86
    #define FIR__AVX2 __attribute__((target("avx2")))
    #define FIR__AVX512 __attribute__((target("avx512f")))
    FIR__DEFINE_KERNEL(fir__kern_avx2_u, FIR__AVX2, fir_v4d, 4, 8, 4, 1)
    FIR__DEFINE_KERNEL(fir__kern_avx2_g, FIR__AVX2, fir_v4d, 4, 8, 4, 0)
    FIR__DEFINE_KERNEL(fir__kern_avx512_u, FIR__AVX512, fir_v8d, 8, 12, 4, 1)
    FIR__DEFINE_KERNEL(fir__kern_avx512_g, FIR__AVX512, fir_v8d, 8, 12, 4, 0)
    #endif
    #endif  /* FIR_HAVE_VEC */

    /* 1 if this machine and build can run kernel level `level` */
    FIR_UNUSED static int fir_kernel_supported(int level)
    {
        switch (level) {
        case FIR_KERNEL_SCALAR:
            return 1;
    #ifdef FIR_HAVE_VEC
        case FIR_KERNEL_VEC128:
            return 1;
    #endif
    #ifdef FIR_HAVE_X86
        case FIR_KERNEL_AVX2:
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx2") ? 1 : 0;
        case FIR_KERNEL_AVX512:
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx512f") ? 1 : 0;
    #endif
        default:
            return 0;
        }
    }

    /* Level used by default.  AVX2 rather than AVX-512: on the reference
       machine (AMD EPYC, 512-bit ops executed as two halves) AVX-512 was no
       faster, slower on short runs, and on some Intel parts it lowers the
       clock of the whole core (bench/bench_fir.py). */
    FIR_UNUSED static int fir_kernel_best(void)
    {
        if (fir_kernel_supported(FIR_KERNEL_AVX2)) return FIR_KERNEL_AVX2;
        if (fir_kernel_supported(FIR_KERNEL_VEC128)) return FIR_KERNEL_VEC128;
        return FIR_KERNEL_SCALAR;
    }

    /* out[k] = sum_i (src[off[i] + k] * c[i]) * g for k < nout, any level */
    static void fir__compute(const fir_stage_t *st, const double *src,
                             double *out, Py_ssize_t nout)
    {
        Py_ssize_t k = 0;
        const double *c = st->taps;
        const Py_ssize_t *off = st->off;
        int L = st->length, u = st->unit_gain;
        double g = st->gain;
        switch (st->kernel) {
    #ifdef FIR_HAVE_VEC
        case FIR_KERNEL_VEC128:
            k = u ? fir__kern_v128_u(src, off, c, L, g, out, nout)
                  : fir__kern_v128_g(src, off, c, L, g, out, nout);
            break;
    #endif
    #ifdef FIR_HAVE_X86
        case FIR_KERNEL_AVX2:
            k = u ? fir__kern_avx2_u(src, off, c, L, g, out, nout)
                  : fir__kern_avx2_g(src, off, c, L, g, out, nout);
            break;
        case FIR_KERNEL_AVX512:
            k = u ? fir__kern_avx512_u(src, off, c, L, g, out, nout)
                  : fir__kern_avx512_g(src, off, c, L, g, out, nout);
            break;
    #endif
        default:
            break;
        }
        fir__kern_scalar(src, off, c, L, g, u, out, k, nout);
    }

    /* ------------------------------------------------------------ stage */

    /* Release everything; the stage becomes all-zero (safe to free again,
       safe to fir_stage_init again).  A zero-filled stage may be freed. */
    FIR_UNUSED static void fir_stage_free(fir_stage_t *st)
    {
        free(st->taps);
        free(st->rows);
        free(st->off);
        memset(st, 0, sizeof(*st));
    }

    /* Set up a stage with a copy of taps[0..L-1] (oldest-sample weight
       first), decimation D and gain; kernel = fir_kernel_best().  Previous
       contents of *st are overwritten, not freed.  Returns FIR_OK,
       FIR_EINVAL (taps NULL, L < 1, L > FIR_MAX_LEN, D < 1 or D > L; *st is
       then all-zero) or FIR_ENOMEM (*st all-zero). */
    FIR_UNUSED static int fir_stage_init(fir_stage_t *st, const double *taps, int L,
                                         int D, double gain)
    {
        int i;
        memset(st, 0, sizeof(*st));
        if (taps == NULL || L < 1 || L > FIR_MAX_LEN || D < 1 || D > L)
            return FIR_EINVAL;
        st->length = L;
        st->decimation = D;
        st->gain = gain;
        st->unit_gain = (gain == 1.0);
        st->kernel = fir_kernel_best();
        st->stride = ((Py_ssize_t)L + FIR_BLOCK + D - 1) / D;
        st->taps = (double *)malloc((size_t)L * sizeof(double));
        st->rows = (double *)malloc((size_t)(st->stride * D) * sizeof(double));
        st->off = (Py_ssize_t *)malloc((size_t)L * sizeof(Py_ssize_t));
        if (st->taps == NULL || st->rows == NULL || st->off == NULL) {
            fir_stage_free(st);
            return FIR_ENOMEM;
        }
        memcpy(st->taps, taps, (size_t)L * sizeof(double));
        for (i = 0; i < L; i++)
            st->off[i] = (Py_ssize_t)(i % D) * st->stride + i / D;
        return FIR_OK;
    }

    /* Choose the kernel level (FIR_KERNEL_AUTO = best); returns the level
       set, or FIR_EINVAL (kernel unchanged) if it cannot run here. */
    FIR_UNUSED static int fir_stage_set_kernel(fir_stage_t *st, int level)
    {
        if (level == FIR_KERNEL_AUTO) level = fir_kernel_best();
        if (!fir_kernel_supported(level)) return FIR_EINVAL;
        st->kernel = level;
        return level;
    }

    /* Drop all pending input: the next output is computed from the first L
       samples given after the reset (SeisComP's reset_child). */
    FIR_UNUSED static void fir_stage_reset(fir_stage_t *st)
    {
        st->head = 0;
        st->tail = 0;
    }

    /* Input samples given but not yet consumed (SeisComP's
       parent.cbuf.used(inp)); always < L between calls. */
    FIR_UNUSED static Py_ssize_t fir_stage_pending(const fir_stage_t *st)
    {
        return st->tail - st->head;
    }

    /* Exact number of outputs fir_stage_process(st, x, n, ...) writes now. */
    FIR_UNUSED static Py_ssize_t fir_stage_max_out(const fir_stage_t *st, Py_ssize_t n)
    {
        Py_ssize_t avail = st->tail - st->head + (n > 0 ? n : 0);
        if (st->length < 1 || avail < st->length) return 0;
        return (avail - st->length) / st->decimation + 1;
    }

    /* Make room for m <= FIR_BLOCK more samples: if sample tail + m - 1
       would fall beyond the rows, move every row left by head / D columns
       (head is a multiple of D, so row membership is unchanged). */
    static void fir__make_room(fir_stage_t *st, Py_ssize_t m)
    {
        const int D = st->decimation;
        Py_ssize_t shift, p;
        if ((st->tail + m - 1) / D < st->stride) return;
        shift = st->head / D;
        for (p = 0; p < D; p++) {
            /* row p holds samples a = p, p + D, ... < tail: columns [0, ncol) */
            Py_ssize_t ncol = st->tail > p ? (st->tail - p + D - 1) / D : 0;
            double *row = st->rows + p * st->stride;
            if (ncol > shift)
                memmove(row, row + shift, (size_t)(ncol - shift) * sizeof(double));
        }
        st->head -= shift * D;
        st->tail -= shift * D;
    }

    /* whole columns c = 0..ncol-1 of a constant decimation DC: sample
       xs[c*DC + q] goes to row q, column col + c */
    #define FIR__COLS(DC)                                                         \\
        for (c_ = 0; c_ < ncol_; c_++)                                            \\
            for (q_ = 0; q_ < (DC); q_++)                                         \\
                r_[q_ * S_ + col_ + c_] = (double)xs_[c_ * (DC) + q_];

    /* Define NAME(st, x, m): store x[0..m-1] (type T) as sample numbers
       st->tail.. in the rows, converting to double. */
    #define FIR__DEFINE_SCATTER(NAME, T)                                          \\
    static void NAME(fir_stage_t *st, const T *x, Py_ssize_t m)                   \\
    {                                                                             \\
        const int D = st->decimation;                                             \\
        const Py_ssize_t S_ = st->stride;                                         \\
        double *r_ = st->rows;                                                    \\
        Py_ssize_t j = 0, col_ = st->tail / D, c_, ncol_;                         \\
        int p = (int)(st->tail % D), q_;                                          \\
        const T *xs_;                                                             \\
        st->tail += m;                                                            \\
        if (D == 1) {                                                             \\
            double *d = r_ + col_;                                                \\
            for (j = 0; j < m; j++) d[j] = (double)x[j];                          \\
            return;                                                               \\
        }                                                                         \\
        /* finish the partly filled column */                                     \\
        while (p != 0 && j < m) {                                                 \\
            r_[p * S_ + col_] = (double)x[j++];                                   \\
            if (++p == D) { p = 0; col_++; }                                      \\
        }                                                                         \\
        /* whole columns, unrolled for the usual decimation factors */            \\
        xs_ = x + j;                                                              \\
        ncol_ = (m - j) / D;                                                      \\
        switch (D) {                                                              \\
        case 2: FIR__COLS(2) break;                                               \\
        case 3: FIR__COLS(3) break;                                               \\
        case 4: FIR__COLS(4) break;                                               \\
        case 5: FIR__COLS(5) break;                                               \\
        case 6: FIR__COLS(6) break;                                               \\
        case 8: FIR__COLS(8) break;                                               \\
        case 10: FIR__COLS(10) break;                                             \\
        default:                                                                  \\
            for (q_ = 0; q_ < D; q_++) {                                          \\
                double *rr = r_ + q_ * S_ + col_;                                 \\
                const T *xx = xs_ + q_;                                           \\
                for (c_ = 0; c_ < ncol_; c_++) rr[c_] = (double)xx[c_ * D];       \\
            }                                                                     \\
        }                                                                         \\
        j += ncol_ * D;                                                           \\
        col_ += ncol_;                                                            \\
        /* start of the last column */                                            \\
        for (p = 0; j < m; j++, p++)                                              \\
            r_[p * S_ + col_] = (double)x[j];                                     \\
    }

    FIR__DEFINE_SCATTER(fir__scatter_f64, double)
    FIR__DEFINE_SCATTER(fir__scatter_i32, int32_t)

    /* Filter every complete window of the pending input; returns outputs. */
    static Py_ssize_t fir__run(fir_stage_t *st, double *out)
    {
        const int L = st->length, D = st->decimation;
        const Py_ssize_t avail = st->tail - st->head;
        Py_ssize_t nout;
        if (avail < L) return 0;
        nout = (avail - L) / D + 1;
        fir__compute(st, st->rows + st->head / D, out, nout);
        st->head += nout * D;
        return nout;
    }

    /* Feed n input samples; writes the fir_stage_max_out(st, n) outputs to
       out[0..] and returns their number, or FIR_EINVAL (stage not
       initialised, n < 0) / FIR_EOUTCAP (out_cap too small; nothing is
       consumed).  Outputs depend only on the sample sequence, never on how
       it is split into calls. */
    FIR_UNUSED static Py_ssize_t fir_stage_process(fir_stage_t *st, const double *x,
                                                   Py_ssize_t n, double *out,
                                                   Py_ssize_t out_cap)
    {
        Py_ssize_t written = 0;
        if (st->taps == NULL || n < 0) return FIR_EINVAL;
        if (out_cap < fir_stage_max_out(st, n)) return FIR_EOUTCAP;
        while (n > 0) {
            Py_ssize_t m = n < FIR_BLOCK ? n : FIR_BLOCK;
            fir__make_room(st, m);
            fir__scatter_f64(st, x, m);
            x += m;
            n -= m;
            written += fir__run(st, out + written);
        }
        return written;
    }

    /* Same as fir_stage_process for int32 input (converted exactly to double,
       as SeisComP's cbuf.write(data[i]) does). */
    FIR_UNUSED static Py_ssize_t fir_stage_process_i32(fir_stage_t *st, const int32_t *x,
                                                       Py_ssize_t n, double *out,
                                                       Py_ssize_t out_cap)
    {
        Py_ssize_t written = 0;
        if (st->taps == NULL || n < 0) return FIR_EINVAL;
        if (out_cap < fir_stage_max_out(st, n)) return FIR_EOUTCAP;
        while (n > 0) {
            Py_ssize_t m = n < FIR_BLOCK ? n : FIR_BLOCK;
            fir__make_room(st, m);
            fir__scatter_i32(st, x, m);
            x += m;
            n -= m;
            written += fir__run(st, out + written);
        }
        return written;
    }
    """
    int FIR_OK
    int FIR_ENOMEM
    int FIR_EINVAL
    int FIR_EOUTCAP
    int FIR_KERNEL_SCALAR
    int FIR_KERNEL_VEC128
    int FIR_KERNEL_AVX2
    int FIR_KERNEL_AVX512
    int FIR_KERNEL_AUTO
    int FIR_BLOCK
    int FIR_MAX_LEN

    ctypedef struct fir_stage_t:
        double* taps            # L taps, taps[i] weights x[kD+i] (oldest first)
        int length              # L
        int decimation          # D, 1 <= D <= L
        double gain             # per term: (x*c)*gain
        int unit_gain           # gain == 1.0 (second multiply skipped, exact)
        int kernel              # FIR_KERNEL_* in use
        double* rows            # D polyphase rows of pending input
        Py_ssize_t stride       # row length in doubles
        Py_ssize_t head         # sample number of the next window start
        Py_ssize_t tail         # sample number after the newest sample
        Py_ssize_t* off         # per-tap offsets into the rows

    int fir_stage_init(fir_stage_t* st, const double* taps, int L, int D,
                       double gain) noexcept nogil
    void fir_stage_free(fir_stage_t* st) noexcept nogil
    void fir_stage_reset(fir_stage_t* st) noexcept nogil
    int fir_stage_set_kernel(fir_stage_t* st, int level) noexcept nogil
    Py_ssize_t fir_stage_pending(const fir_stage_t* st) noexcept nogil
    Py_ssize_t fir_stage_max_out(const fir_stage_t* st, Py_ssize_t n) noexcept nogil
    Py_ssize_t fir_stage_process(fir_stage_t* st, const double* x, Py_ssize_t n,
                                 double* out, Py_ssize_t out_cap) noexcept nogil
    Py_ssize_t fir_stage_process_i32(fir_stage_t* st, const int32_t* x, Py_ssize_t n,
                                     double* out, Py_ssize_t out_cap) noexcept nogil
    int fir_kernel_supported(int level) noexcept nogil
    int fir_kernel_best() noexcept nogil
