"""``seedlink-fast bench``: a load generator for any SeedLink 3 server.

It talks to a server by address only (``--seedlink HOST:PORT``), so the
same figures can be taken from SeisComP's seedlink, ringserver and ours.
Scenarios: ``fanout``, ``handshake``, ``idle`` (see :mod:`.scenarios`).
"""
