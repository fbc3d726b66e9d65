"""``seedlink-fast bench``: a load generator for any SeedLink 3 server.

It talks to a server by address only (``--seedlink HOST:PORT``), so the
same figures can be taken from SeisComP's seedlink, ringserver and ours;
it can also start and stop the server itself (``--server-cmd``).
Scenarios: ``fanout``, ``handshake``, ``idle`` (:mod:`.scenarios`),
``latency`` (:mod:`.latency`), ``ingest`` (:mod:`.ingest`); feeds: the
plugin :mod:`.feeder`, the raw ingest port (:mod:`.rawpush`), DataLink
(:mod:`.datalink`).  Output and plots: :mod:`.report`.
"""
