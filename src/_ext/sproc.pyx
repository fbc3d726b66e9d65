# Stream processor kernel: plugin packets -> FIR decimation trees -> Steim
# records, reproducing SeisComP's seedlink record for record.
#
# One TreeInput is one instance of a streams.xml tree for one input channel
# of one station.  Its nodes live in a C array in depth-first pre-order, the
# order in which SeisComP's Node objects hand samples to their encoder and
# then to their children.  A whole chunk of input samples runs through the
# whole tree in one call; the records completed inside the chunk are then
# put in the order SeisComP would have produced them, sample by sample:
# by the input sample whose arrival completed them, then by tree order.
#
# PacketEngine parses the fd 63 byte stream and dispatches packets to
# TreeInputs and to per-station record lists, all in C except for the rare
# events (log text, unknown station or channel, time gaps) that need Python.

include "_steim_core.pxi"
include "_mseed_core.pxi"
include "_fir_core.pxi"

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy
from libc.stdint cimport int8_t
from libc.string cimport memcmp
from cpython.object cimport PyObject

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef extern from *:
    """
    /* SeisComP's Node clock synchronisation (SPClock::sync_time) when the
       parent's clock has just been set, so its seconds and ticks are 0:
       the time of the child's next output is the parent's time, minus the
       samples the child has not consumed yet, plus the filter's shift. */
    static inline sl_time_t sl_sync_child(sl_time_t parent, int used, double shift,
                                          int freqn, int freqd) {
        return sl_add_dtime(parent, 1000000 * ((double)0 +
            ((double)(0 - used) + shift) * (double)freqd / (double)freqn));
    }
    /* tdiff(it1, it2) in microseconds, as a double */
    static inline double sl_tdiff(sl_time_t a, sl_time_t b) {
        return (double)(a.sec - b.sec) * 1000000.0 + a.usec - b.usec;
    }
    /* SeisComP's static_cast<int32_t>(double): truncation toward zero */
    static inline int32_t sl_trunc_i32(double v) { return (int32_t)v; }
    """
    sl_time_t sl_sync_child(sl_time_t parent, int used, double shift,
                            int freqn, int freqd) noexcept nogil
    double sl_tdiff(sl_time_t a, sl_time_t b) noexcept nogil
    int32_t sl_trunc_i32(double v) noexcept nogil


cdef enum:
    PT_RAW_TIME = 8
    PT_RAW = 9
    PT_GAP = 10
    PT_FLUSH = 11
    PT_LOG = 12
    PT_MSEED = 13
    PLUGIN_HEADER = 60
    PLUGIN_MAX_DATA = 4000


ctypedef struct node_t:
    int parent              # index of the parent node, -1 for the root
    int first_child         # children are the nodes after this one in pre-order
    int next_sibling        # -1: last child
    fir_stage_t *fir        # NULL: pass-through node (SeisComP's DummyFilter)
    double shift            # output delay in input samples (L/2 - 0.5; 0 for M filters)
    int in_fn               # the node's clock rate in_fn/in_fd Hz (its input rate)
    int in_fd
    sl_time_t itime         # node clock at the last synchronisation
    int32_t corr            # usec_correction and timing quality it carries
    int32_t qual
    steim_enc_t *enc        # NULL: no output stream
    mseed_hdr_t hdr         # header template of its records
    int seq                 # next record sequence number (mod 10**6)
    # per-chunk work areas
    double *dbuf            # filtered outputs (un-truncated)
    int32_t *ibuf           # outputs truncated for the encoder
    int32_t *pos            # input sample (chunk index) that produced each output
    Py_ssize_t cap          # capacity of the three buffers
    const double *out       # outputs of this chunk (may alias the parent's)
    const int32_t *iout
    const int32_t *opos
    Py_ssize_t nout
    uint8_t *rdata          # records completed in this chunk (data areas)
    steim_rec_t *rinfo
    Py_ssize_t rcap
    Py_ssize_t nrec


ctypedef struct input_slot_t:
    char key[20]            # station[10] + channel[10] as they come on the wire
    PyObject *tree          # borrowed: PacketEngine.inputs holds the reference
    int used


cdef inline uint32_t _key_hash(const uint8_t *key) noexcept nogil:
    # FNV-1a over the 20 key bytes
    cdef uint32_t h = 2166136261u
    cdef int i
    for i in range(20):
        h = (h ^ key[i]) * 16777619u
    return h


ctypedef struct pending_t:
    int32_t pos
    int node
    int index


cdef class TreeInput:
    """One tree instance for one input channel of one station.

    Built by seedlink_fast.streamproc from streams.xml; records go, in
    SeisComP's order, to the station's ``records`` list (shared by every
    input of the station).
    """
    cdef node_t *nodes
    cdef int nnodes
    cdef readonly str name              # input (plugin channel) name
    cdef readonly object station        # the StationOutput
    cdef list records                   # station.records, cached
    # root clock (SPClock of the root Node)
    cdef int root_fn, root_fd
    cdef sl_time_t itime
    cdef int64_t count                  # samples since the last time set
    cdef int32_t corr, qual
    cdef readonly double last_gap       # us, of the last time set or gap packet
    cdef public double gap_warn, gap_flush, gap_reset     # us thresholds, 0 = off
    cdef double *conv                   # root samples as doubles
    cdef Py_ssize_t conv_cap
    cdef pending_t *merge
    cdef Py_ssize_t merge_cap
    # seedlink_fast.backfill.RawBackfill when the station's backfill_buffer
    # is on: PacketEngine then hands it this input's RawDataTime, RawData and
    # Flush packets instead of running them (None: the direct C path)
    cdef public object backfill

    def __cinit__(self):
        self.nodes = NULL
        self.nnodes = 0
        self.conv = NULL
        self.merge = NULL

    def __dealloc__(self):
        cdef int i
        if self.nodes is not NULL:
            for i in range(self.nnodes):
                _node_free(&self.nodes[i])
            free(self.nodes)
        free(self.conv)
        free(self.merge)

    def __init__(self, str name, station, list nodes, int rate_num, int rate_den, *,
                 double gap_warn=0, double gap_flush=0, double gap_reset=0):
        """nodes: pre-order list of dicts with keys parent, taps (float64
        array or None), decimation, gain, shift, in_rate (num, den),
        out_rate (num, den), stream (channel code or None), location,
        level (1/2) -- see seedlink_fast.streamproc.build_tree_input."""
        cdef int i, n = len(nodes), p, rc
        cdef node_t *nd
        cdef const double[::1] taps
        if n < 1:
            raise ValueError("a tree needs at least its root node")
        self.name = name
        self.station = station
        self.records = station.records
        self.root_fn = rate_num
        self.root_fd = rate_den
        self.count = 0
        self.corr = 0
        self.qual = -1
        self.itime = _YEAR_ZERO
        self.last_gap = 0.0
        self.gap_warn = gap_warn
        self.gap_flush = gap_flush
        self.gap_reset = gap_reset
        self.backfill = None
        self.nodes = <node_t *>calloc(n, sizeof(node_t))
        if self.nodes is NULL:
            raise MemoryError()
        self.nnodes = n
        for i in range(n):
            spec = nodes[i]
            nd = &self.nodes[i]
            nd.parent = spec["parent"]
            nd.first_child = -1
            nd.next_sibling = -1
            if (i == 0) != (nd.parent < 0) or nd.parent >= i:
                raise ValueError("nodes must be in pre-order with the root first")
            nd.shift = spec["shift"]
            nd.in_fn, nd.in_fd = spec["in_rate"]
            nd.qual = -1
            if spec["taps"] is not None:
                taps = np.ascontiguousarray(spec["taps"], dtype=np.float64)
                nd.fir = <fir_stage_t *>calloc(1, sizeof(fir_stage_t))
                if nd.fir is NULL:
                    raise MemoryError()
                rc = fir_stage_init(nd.fir, &taps[0], <int>taps.shape[0],
                                    spec["decimation"], spec["gain"])
                if rc < 0:
                    free(nd.fir)
                    nd.fir = NULL
                    raise ValueError("bad filter for node %d of input %s" % (i, name))
            if spec["stream"]:
                nd.enc = <steim_enc_t *>malloc(sizeof(steim_enc_t))
                if nd.enc is NULL:
                    raise MemoryError()
                steim_enc_init(nd.enc, spec["level"], 7, 0)
                out_fn, out_fd = spec["out_rate"]
                nd.enc.freqn = out_fn
                nd.enc.freqd = out_fd
                _fill_padded(nd.hdr.station, 5, station.name)
                _fill_padded(nd.hdr.location, 2, spec["location"])
                _fill_padded(nd.hdr.channel, 3, spec["stream"])
                _fill_padded(nd.hdr.network, 2, station.network)
                fact, mult = rate_factor_multiplier(out_fn, out_fd)
                nd.hdr.rate_factor = fact
                nd.hdr.rate_mult = mult
                nd.hdr.encoding = 11 if spec["level"] == 2 else 10
                nd.hdr.reclen_exp = 9
            # link into the parent's child list (children keep their order)
            if i > 0:
                p = nd.parent
                if self.nodes[p].first_child < 0:
                    self.nodes[p].first_child = i
                else:
                    p = self.nodes[p].first_child
                    while self.nodes[p].next_sibling >= 0:
                        p = self.nodes[p].next_sibling
                    self.nodes[p].next_sibling = i

    # -- clock synchronisation (SeisComP's Node::set_time / sync_time) -------

    cdef void _sync_subtree(self, int i) noexcept nogil:
        # node i takes its time from its parent, then its encoder and children
        cdef node_t *nd = &self.nodes[i]
        cdef node_t *par = &self.nodes[nd.parent]
        cdef int used = <int>fir_stage_pending(nd.fir) if nd.fir is not NULL else 0
        nd.itime = sl_sync_child(par.itime, used, nd.shift, nd.in_fn, nd.in_fd)
        nd.corr = par.corr
        nd.qual = par.qual
        if nd.enc is not NULL:
            steim_enc_sync(nd.enc, nd.itime, nd.corr, nd.qual)
        cdef int c = nd.first_child
        while c >= 0:
            self._sync_subtree(c)
            c = self.nodes[c].next_sibling

    cdef void _sync_all(self) noexcept nogil:
        cdef node_t *root = &self.nodes[0]
        root.itime = self.itime
        root.corr = self.corr
        root.qual = self.qual
        if root.enc is not NULL:
            steim_enc_sync(root.enc, root.itime, root.corr, root.qual)
        cdef int c = root.first_child
        while c >= 0:
            self._sync_subtree(c)
            c = self.nodes[c].next_sibling

    cdef sl_time_t _predicted(self, int64_t extra) noexcept nogil:
        # the root clock's current time, `extra` samples ahead
        cdef int seconds = <int>(self.count // self.root_fn) * self.root_fd
        cdef int ticks = <int>(self.count % self.root_fn)
        return sl_add_dtime(self.itime, 1000000 * (<double>seconds +
                            <double>(ticks + extra) * <double>self.root_fd / <double>self.root_fn))

    cdef int set_time(self, sl_time_t it, int corr, int qual) except -1:
        """RawDataTime: set the clock, measure the gap, apply the gap policy."""
        cdef sl_time_t predicted = self._predicted(0)
        # a clock never set (SeisComP: INT_TIME all zero) measures no gap
        if self.itime.sec == _YEAR_ZERO.sec and self.itime.usec == 0:
            self.last_gap = 0.0
        else:
            self.last_gap = sl_tdiff(it, predicted)
        self.itime = it
        self.count = 0
        self.corr = corr
        self.qual = qual
        self._sync_all()
        return self._gap_policy(False)

    cdef int add_ticks(self, int n, int corr, int qual) except -1:
        """RawDataGap: advance the clock by n samples."""
        self.itime = self._predicted(n)
        self.count = 0
        self.corr = corr
        self.qual = qual
        self.last_gap = 1000000 * <double>n * <double>self.root_fd / <double>self.root_fn
        self._sync_all()
        return self._gap_policy(True)

    cdef int _gap_policy(self, bint explicit) except -1:
        cdef double gap = self.last_gap
        if self.gap_warn != 0 and (gap <= -self.gap_warn or gap >= self.gap_warn):
            self.station.time_gap(self.name, gap, explicit)
        if self.gap_reset != 0 and (gap <= -self.gap_reset or gap >= self.gap_reset):
            self.reset()
        elif self.gap_flush != 0 and (gap <= -self.gap_flush or gap >= self.gap_flush):
            self.flush()
        return 0

    # -- flush and reset (SeisComP's Node::flush / reset / reset_child) -------

    cdef int _flush_encoder(self, int i) except -1:
        cdef node_t *nd = &self.nodes[i]
        if nd.enc is NULL:
            return 0
        _reserve_records(nd, 3)
        nd.nrec = steim_enc_flush(nd.enc, nd.rdata, nd.rinfo)
        self._emit_node(i)
        return 0

    cdef int _flush_subtree(self, int i) except -1:
        self._flush_encoder(i)
        cdef int c = self.nodes[i].first_child
        while c >= 0:
            self._flush_subtree(c)
            c = self.nodes[c].next_sibling
        return 0

    cpdef flush(self):
        """Flush every encoder of the tree (partial records), tree order."""
        self._flush_subtree(0)

    cdef int _reset_child(self, int i) except -1:
        self._flush_encoder(i)
        if self.nodes[i].fir is not NULL:
            fir_stage_reset(self.nodes[i].fir)
        self._sync_subtree(i)
        cdef int c = self.nodes[i].first_child
        while c >= 0:
            self._reset_child(c)
            c = self.nodes[c].next_sibling
        return 0

    cpdef reset(self):
        """Flush every encoder and restart every filter from scratch."""
        self._flush_encoder(0)
        cdef int c = self.nodes[0].first_child
        while c >= 0:
            self._reset_child(c)
            c = self.nodes[c].next_sibling

    # -- data ------------------------------------------------------------------

    cdef int send(self, const int32_t *x, Py_ssize_t n) except -1:
        """Run n samples through the tree; queue the records they complete."""
        cdef Py_ssize_t i, k, nout, first, total = 0
        cdef int j, p, L, D, pend
        cdef node_t *nd
        cdef node_t *par
        if n <= 0:
            return 0
        if n > self.conv_cap:
            free(self.conv)
            self.conv = <double *>malloc(n * sizeof(double))
            if self.conv is NULL:
                self.conv_cap = 0
                raise MemoryError()
            self.conv_cap = n
        for i in range(n):
            self.conv[i] = <double>x[i]
        self.count += n
        nd = &self.nodes[0]
        _reserve_node(nd, n)
        for i in range(n):
            nd.pos[i] = <int32_t>i
        nd.out = self.conv
        nd.iout = x
        nd.opos = nd.pos
        nd.nout = n
        for j in range(1, self.nnodes):
            nd = &self.nodes[j]
            par = &self.nodes[nd.parent]
            if nd.fir is NULL:
                nd.out = par.out
                nd.iout = par.iout
                nd.opos = par.opos
                nd.nout = par.nout
            else:
                L = nd.fir.length
                D = nd.fir.decimation
                pend = <int>fir_stage_pending(nd.fir)
                nout = fir_stage_max_out(nd.fir, par.nout)
                _reserve_node(nd, nout)
                # (the GIL is kept: chunks are small and one thread runs the
                # loop; releasing it per stage cost more than the stage)
                nout = fir_stage_process(nd.fir, par.out, par.nout, nd.dbuf, nd.cap)
                # output k completes when parent output L-1-pend+k*D arrives
                first = L - 1 - pend
                for k in range(nout):
                    nd.ibuf[k] = sl_trunc_i32(nd.dbuf[k])
                    nd.pos[k] = par.opos[first + k * D]
                if nout < 0:
                    raise MemoryError("FIR stage failed (%d)" % nout)
                nd.out = nd.dbuf
                nd.iout = nd.ibuf
                nd.opos = nd.pos
                nd.nout = nout
        for j in range(self.nnodes):
            nd = &self.nodes[j]
            nd.nrec = 0
            if nd.enc is not NULL and nd.nout > 0:
                _reserve_records(nd, steim_max_records(7, nd.nout))
                first = nd.enc.nstored
                nd.nrec = steim_enc_push(nd.enc, nd.iout, nd.nout, nd.rdata, nd.rinfo)
                for k in range(nd.nrec):
                    # chunk position of the sample that completed the record
                    nd.rinfo[k].done_index = nd.opos[nd.rinfo[k].done_index - first]
                total += nd.nrec
        if total:
            self._emit_merged(total)
        return 0

    cdef int _emit_merged(self, Py_ssize_t total) except -1:
        # SeisComP completes records sample by sample, tree order within a
        # sample: sort by (input sample, node), stable per node.
        cdef Py_ssize_t m = 0, a, b
        cdef int j
        cdef pending_t tmp
        if total > self.merge_cap:
            free(self.merge)
            self.merge = <pending_t *>malloc(total * sizeof(pending_t))
            if self.merge is NULL:
                self.merge_cap = 0
                raise MemoryError()
            self.merge_cap = total
        for j in range(self.nnodes):
            for a in range(self.nodes[j].nrec):
                self.merge[m].pos = <int32_t>self.nodes[j].rinfo[a].done_index
                self.merge[m].node = j
                self.merge[m].index = <int>a
                m += 1
        # insertion sort: a handful of records per chunk
        for a in range(1, m):
            tmp = self.merge[a]
            b = a - 1
            while b >= 0 and (self.merge[b].pos > tmp.pos or
                              (self.merge[b].pos == tmp.pos and self.merge[b].node > tmp.node)):
                self.merge[b + 1] = self.merge[b]
                b -= 1
            self.merge[b + 1] = tmp
        for a in range(m):
            self._append_record(self.merge[a].node, self.merge[a].index)
        return 0

    cdef int _emit_node(self, int j) except -1:
        cdef Py_ssize_t a
        for a in range(self.nodes[j].nrec):
            self._append_record(j, a)
        self.nodes[j].nrec = 0
        return 0

    cdef int _append_record(self, int j, Py_ssize_t a) except -1:
        cdef node_t *nd = &self.nodes[j]
        cdef steim_rec_t *info = &nd.rinfo[a]
        cdef bytes rec = PyBytes_FromStringAndSize(NULL, 512)
        cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(rec)
        memset(p, 0, 64)
        memcpy(p + 64, nd.rdata + a * 448, 448)
        nd.hdr.timing_quality = info.qual
        nd.hdr.usec_correction = info.corr
        mseed_write_header(p, &nd.hdr, nd.seq, info.start.sec * 1000000 + info.start.usec,
                           info.nsamples, info.nframes)
        nd.seq = (nd.seq + 1) % 1000000
        self.records.append(rec)
        return 0

    def feed(self, samples, time=None, int usec_correction=0, int timing_quality=-1):
        """Python entry (tests, replay of arrays): like a RawDataTime packet
        when ``time`` is an (epoch seconds, usec) pair, else RawData."""
        cdef const int32_t[::1] x = np.ascontiguousarray(samples, dtype=np.int32)
        cdef sl_time_t t
        if time is not None:
            t.sec, t.usec = time
            self.set_time(t, usec_correction, timing_quality)
        if x.shape[0]:
            self.send(&x[0], x.shape[0])

    def gap(self, int n, int usec_correction=0, int timing_quality=-1):
        """Python entry: a RawDataGap packet of n samples."""
        self.add_ticks(n, usec_correction, timing_quality)

    @property
    def rate(self):
        """The input sample rate as (numerator, denominator) Hz."""
        return (self.root_fn, self.root_fd)

    @property
    def pending_samples(self):
        """Per node: input samples its filter holds, and samples its encoder
        holds outside finished records (exposed for tests)."""
        cdef node_t *nd
        out = []
        for j in range(self.nnodes):
            nd = &self.nodes[j]
            out.append((fir_stage_pending(nd.fir) if nd.fir is not NULL else 0,
                        (nd.enc.nstored - (nd.enc.rec_first if nd.enc.rec_open else
                                           nd.enc.nstored - nd.enc.npend))
                        if nd.enc is not NULL else 0))
        return out


# SeisComP's unset clock is INT_TIME {0, 0, 0}: 1 January of year 0
cdef sl_time_t _YEAR_ZERO
_YEAR_ZERO.sec = mseed_join_time(0, 1, 0, 0, 0, 0) // 1000000
_YEAR_ZERO.usec = 0


cdef void _node_free(node_t *nd) noexcept nogil:
    if nd.fir is not NULL:
        fir_stage_free(nd.fir)
        free(nd.fir)
    free(nd.enc)
    free(nd.dbuf)
    free(nd.ibuf)
    free(nd.pos)
    free(nd.rdata)
    free(nd.rinfo)


cdef int _reserve_node(node_t *nd, Py_ssize_t n) except -1:
    if n <= nd.cap:
        return 0
    n = max(n, 2 * nd.cap, 64)
    free(nd.dbuf)
    free(nd.ibuf)
    free(nd.pos)
    nd.dbuf = <double *>malloc(n * sizeof(double))
    nd.ibuf = <int32_t *>malloc(n * sizeof(int32_t))
    nd.pos = <int32_t *>malloc(n * sizeof(int32_t))
    if nd.dbuf is NULL or nd.ibuf is NULL or nd.pos is NULL:
        nd.cap = 0
        raise MemoryError()
    nd.cap = n
    return 0


cdef int _reserve_records(node_t *nd, Py_ssize_t n) except -1:
    if n <= nd.rcap:
        return 0
    n = max(n, 4)
    free(nd.rdata)
    free(nd.rinfo)
    nd.rdata = <uint8_t *>malloc(n * 448)
    nd.rinfo = <steim_rec_t *>malloc(n * sizeof(steim_rec_t))
    if nd.rdata is NULL or nd.rinfo is NULL:
        nd.rcap = 0
        raise MemoryError()
    nd.rcap = n
    return 0


def ptime_to_time(int year, int yday, int hour, int minute, int second, int usec):
    """(epoch seconds, usec) of a plugin ptime, as SeisComP's pt_to_it gives it."""
    cdef sl_time_t t = _ptime(year, yday, hour, minute, second, usec)
    return t.sec, t.usec


def add_dtime(sec, int usec, double usecs):
    """SeisComP's add_dtime on an (epoch seconds, usec) time: add a double
    number of microseconds, flooring to a whole microsecond."""
    cdef sl_time_t t
    t.sec = sec
    t.usec = usec
    t = sl_add_dtime(t, usecs)
    return t.sec, t.usec


cdef inline sl_time_t _ptime(int year, int yday, int hour, int minute, int second,
                             int usec) noexcept nogil:
    cdef sl_time_t t
    cdef int64_t us = mseed_join_time(year, yday, hour, minute, second, usec)
    t.sec = _floordiv(us, 1000000)
    t.usec = <int>(us - t.sec * 1000000)
    return t


cdef class PacketEngine:
    """Parses a plugin's fd 63 byte stream and runs its packets.

    ``resolve(station_key, channel)`` is called once per new (station,
    channel) pair of raw data and returns a TreeInput or None (ignored);
    ``station(station_key)`` returns the StationOutput or None (not
    configured).  Both are cached, so they may log.  Records are appended to
    each StationOutput's ``records`` list in SeisComP's order.
    """
    cdef object resolve
    cdef object station_of
    cdef dict inputs                    # 20-byte station+channel key -> TreeInput | None
    cdef input_slot_t *slots            # open-addressing cache of `inputs`, in C
    cdef Py_ssize_t nslots, nused
    cdef dict stations                  # 10-byte station key -> StationOutput | None
    cdef uint8_t last_key[10]           # the station of the last LOG / miniSEED packet
    cdef object last_station            # (consecutive ones mostly share it: no dict)
    cdef bint has_last
    cdef bytes leftover
    cdef readonly object error          # the PluginProtocolError that ended the stream
    cdef readonly int64_t packets       # packets handled
    cdef readonly int64_t samples       # raw samples handled

    def __cinit__(self):
        self.slots = NULL
        self.nslots = 0
        self.nused = 0

    def __dealloc__(self):
        free(self.slots)

    def __init__(self, resolve, station):
        self.resolve = resolve
        self.station_of = station
        self.inputs = {}
        self.stations = {}
        self.leftover = b""
        self.error = None
        self.packets = 0
        self.samples = 0

    cdef object _station(self, bytes key):
        try:
            return self.stations[key]
        except KeyError:
            st = self.station_of(key.split(b"\0", 1)[0].decode("latin-1"))
            self.stations[key] = st
            return st

    cdef object _input(self, bytes key):
        try:
            return self.inputs[key]
        except KeyError:
            tree = self.resolve(key[:10].split(b"\0", 1)[0].decode("latin-1"),
                                key[10:].split(b"\0", 1)[0].decode("latin-1"))
            self.inputs[key] = tree
            self._cache(key, tree)
            return tree

    cdef PyObject *_lookup(self, const uint8_t *key) noexcept:
        # the cached object for a raw key, NULL when not cached yet
        cdef Py_ssize_t i
        if self.nslots == 0:
            return NULL
        i = _key_hash(key) & (self.nslots - 1)
        while self.slots[i].used:
            if memcmp(self.slots[i].key, key, 20) == 0:
                return self.slots[i].tree
            i = (i + 1) & (self.nslots - 1)
        return NULL

    cdef int _cache(self, bytes key, object tree) except -1:
        cdef Py_ssize_t i, n, old_n = self.nslots
        cdef input_slot_t *old = self.slots
        if 2 * (self.nused + 1) > self.nslots:
            # grow (and rehash) at half full
            n = max(64, 2 * old_n)
            self.slots = <input_slot_t *>calloc(n, sizeof(input_slot_t))
            if self.slots is NULL:
                self.slots = old
                raise MemoryError()
            self.nslots = n
            self.nused = 0
            for i in range(old_n):
                if old[i].used:
                    self._insert(<const uint8_t *>old[i].key, old[i].tree)
            free(old)
        self._insert(<const uint8_t *>PyBytes_AS_STRING(key), <PyObject *>tree)
        return 0

    cdef void _insert(self, const uint8_t *key, PyObject *tree) noexcept:
        cdef Py_ssize_t i = _key_hash(key) & (self.nslots - 1)
        while self.slots[i].used:
            i = (i + 1) & (self.nslots - 1)
        memcpy(self.slots[i].key, key, 20)
        self.slots[i].tree = tree
        self.slots[i].used = 1
        self.nused += 1

    def feed(self, data):
        """Handle every complete packet in data (plus what an earlier call
        left over).  On a protocol error the packets before the bad one are
        kept, ``error`` is set and the error is raised."""
        cdef bytes buf
        if self.error is not None:
            raise self.error
        if self.leftover:
            buf = self.leftover + bytes(data)
        else:
            buf = data if type(data) is bytes else bytes(data)
        cdef Py_ssize_t used = self._run(buf)
        self.leftover = buf[used:]
        if self.error is not None:
            raise self.error

    cdef Py_ssize_t _run(self, bytes buf) except -1:
        cdef const uint8_t *base = <const uint8_t *>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = len(buf), off = 0, payload
        cdef int32_t h[15]
        cdef int ptype, size
        cdef TreeInput tree
        cdef sl_time_t t
        while n - off >= PLUGIN_HEADER:
            memcpy(h, base + off, PLUGIN_HEADER)
            ptype = h[0]
            size = h[14]
            if ptype == PT_RAW_TIME or ptype == PT_RAW:
                if size < 0 or size * 4 > PLUGIN_MAX_DATA:
                    return self._fail(off, "invalid data size %d in packet of type %d" % (size, ptype))
                payload = size * 4
            elif ptype == PT_LOG or ptype == PT_MSEED:
                if size < 0 or size > PLUGIN_MAX_DATA:
                    return self._fail(off, "invalid data size %d in packet of type %d" % (size, ptype))
                payload = size
            elif ptype == PT_GAP or ptype == PT_FLUSH:
                payload = 0
            else:
                return self._fail(off, "invalid data type %d" % ptype)
            if n - off < PLUGIN_HEADER + payload:
                break
            if ptype == PT_RAW_TIME or ptype == PT_RAW or ptype == PT_GAP or ptype == PT_FLUSH:
                cached = self._lookup(base + off + 4)
                if cached is not NULL:
                    obj = <object>cached
                else:
                    obj = self._input(buf[off + 4:off + 24])
                if obj is not None:
                    tree = <TreeInput>obj
                    if tree.backfill is not None and ptype != PT_GAP:
                        # backfilling (seedlink_fast.backfill): RawDataGap
                        # packets still go straight to the tree, as in SeisComP
                        if ptype == PT_RAW_TIME:
                            t = _ptime(h[6], h[7], h[8], h[9], h[10], h[11])
                            tree.backfill.raw_time(
                                t.sec, t.usec, h[12], h[13],
                                buf[off + PLUGIN_HEADER:off + PLUGIN_HEADER + payload])
                            self.samples += size
                        elif ptype == PT_RAW:
                            tree.backfill.raw(buf[off + PLUGIN_HEADER:off + PLUGIN_HEADER + payload])
                            self.samples += size
                        else:
                            tree.backfill.flush()
                    elif ptype == PT_RAW_TIME:
                        t = _ptime(h[6], h[7], h[8], h[9], h[10], h[11])
                        tree.set_time(t, h[12], h[13])
                        tree.send(<const int32_t *>(base + off + PLUGIN_HEADER), size)
                        self.samples += size
                    elif ptype == PT_RAW:
                        tree.send(<const int32_t *>(base + off + PLUGIN_HEADER), size)
                        self.samples += size
                    elif ptype == PT_GAP:
                        tree.add_ticks(size, h[12], h[13])
                    else:
                        tree.flush()
            else:
                if self.has_last and memcmp(base + off + 4, self.last_key, 10) == 0:
                    st = self.last_station
                else:
                    st = self._station(buf[off + 4:off + 14])
                    memcpy(self.last_key, base + off + 4, 10)
                    self.last_station = st
                    self.has_last = True
                if st is not None:
                    if ptype == PT_LOG:
                        t = _ptime(h[6], h[7], h[8], h[9], h[10], h[11])
                        st.log(t.sec, t.usec, buf[off + PLUGIN_HEADER:off + PLUGIN_HEADER + size])
                    elif size != 512:
                        return self._fail(off, "unsupported Mini-SEED packet size %d" % size)
                    else:
                        st.mseed_sink(buf[off + PLUGIN_HEADER:off + PLUGIN_HEADER + 512])
            off += PLUGIN_HEADER + payload
            self.packets += 1
        return off

    cdef Py_ssize_t _fail(self, Py_ssize_t off, str reason) except -1:
        from seedlink_fast.errors import PluginProtocolError
        self.error = PluginProtocolError("plugin stream: %s (packet at byte %d of this read)"
                                         % (reason, off))
        return off

    @property
    def buffered(self):
        """Bytes of an incomplete packet waiting for more input."""
        return len(self.leftover)
