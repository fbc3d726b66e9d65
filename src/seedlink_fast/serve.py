"""``seedlink-fast serve``: run the SeedLink server.

Without ``-f`` it runs on an embedded default configuration: it listens on
127.0.0.1:18000, keeps its buffer in ``./seedlink-data`` and has no stations
(INFO and HELLO say so).  With ``-f seedlink.ini`` it reads SeisComP's file
and, like SeisComP, listens on all interfaces unless ``--bind`` says
otherwise.
"""
import asyncio
import gc
import logging
import os
import sys

from ._version import __version__
from .errors import ConfigError
from .inifile import GlobalConfig, SeedLinkConfig, load_ini

log = logging.getLogger("seedlink_fast.serve")

DEFAULT_DATA_DIR = "seedlink-data"


def default_config():
    """The embedded configuration: no stations, loopback only."""
    g = GlobalConfig()
    g.organization = "seedlink-fast: no stations configured (run with -f seedlink.ini)"
    g.filebase = os.path.abspath(DEFAULT_DATA_DIR)
    g.port = 18000
    g.encoding = "steim2"
    g.info = "streams"
    g.info_trusted = "all"
    g.window_extraction = True
    g.window_extraction_trusted = True
    g.stream_check = True
    return SeedLinkConfig(globals=g, filename="<embedded>")


def add_subparser(sub):
    p = sub.add_parser("serve", help="run the SeedLink server",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("-f", "--config-file", metavar="SEEDLINK_INI",
                   help="SeisComP seedlink.ini (default: embedded configuration)")
    p.add_argument("--section", default="seedlink", help="ini section (default: seedlink)")
    p.add_argument("-v", action="count", default=0, help="more log output (repeatable)")
    p.add_argument("--verbosity", type=int, default=None, help="log verbosity 0-4")
    p.add_argument("-D", "--daemon", action="store_true",
                   help="log to syslog (facility LOCAL0) as SeisComP does in daemon mode; "
                        "the process stays in the foreground (use your service manager)")
    p.add_argument("--bind", default=None, metavar="ADDR",
                   help="listen address (default: 0.0.0.0 with -f, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: from the ini)")
    p.add_argument("--raw-port", type=int, default=None, metavar="N",
                   help="raw ingest port for pushing devices (default: raw_ingest_port "
                        "from the ini, 65535); 0 picks a free port")
    p.add_argument("--http-port", type=int, default=None, metavar="N",
                   help="serve FDSN dataselect over HTTP on port N of the bind address "
                        "(default: http_port from the ini; 0 = off)")
    p.add_argument("--filebase", default=None, help="buffer directory (overrides the ini)")
    p.add_argument("--idle-timeout", type=float, default=3600, metavar="S",
                   help="close clients that neither send a command nor stream for S "
                        "seconds (0 = never; SeisComP never does); default 3600")
    p.add_argument("--line-timeout", type=float, default=60, metavar="S",
                   help="close clients whose command line stays incomplete for S seconds "
                        "(slow-loris protection, 0 = off); default 60")
    p.add_argument("--max-bad-commands", type=int, default=100, metavar="N",
                   help="close clients after N consecutive invalid commands (0 = off); "
                        "default 100")
    p.add_argument("--no-shutdown-flush", action="store_true",
                   help="drop partial records at shutdown, as SeisComP does")
    p.set_defaults(func=run)


def _log_level(args):
    level = args.verbosity if args.verbosity is not None else 2 + args.v
    return {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(
        min(level, 3), logging.DEBUG)


def _log_to_syslog():
    import logging.handlers

    if not os.path.exists("/dev/log"):
        # SysLogHandler would fail only on every message, not here
        log.warning("syslog not available (no /dev/log); logging to stderr")
        return
    try:
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_LOCAL0)
    except OSError as exc:
        log.warning("syslog not available (%s); logging to stderr", exc)
        return
    handler.setFormatter(logging.Formatter("seedlink-fast: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)


def run(args):
    from .server import Server

    logging.getLogger().setLevel(_log_level(args))
    if args.daemon:
        _log_to_syslog()
    try:
        if args.config_file:
            config = load_ini(args.config_file, section=args.section)
            bind = args.bind or "0.0.0.0"
        else:
            config = default_config()
            bind = args.bind or "127.0.0.1"
    except (ConfigError, OSError) as exc:
        print("seedlink-fast serve: %s" % exc, file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        uvloop = None
    from .session import SessionLimits

    limits = SessionLimits(idle_timeout=args.idle_timeout, line_timeout=args.line_timeout,
                           max_bad_commands=args.max_bad_commands)
    server = Server(config, bind=bind, port=args.port, filebase=args.filebase, limits=limits,
                    flush_on_shutdown=not args.no_shutdown_flush, raw_port=args.raw_port,
                    http_port=args.http_port)

    async def main():
        await server.start()
        # the start-up objects (config, filters, trees) never die: keep the
        # collector from walking them, and collect young objects less often,
        # so that collections do not pause every client
        gc.collect()
        gc.freeze()
        gc.set_threshold(50000, 50, 100)
        await server.serve_forever()

    try:
        if uvloop is not None:
            uvloop.run(main())
        else:
            asyncio.run(main())
    except (RuntimeError, OSError, ConfigError) as exc:
        print("seedlink-fast serve: %s" % exc, file=sys.stderr)
        return 1
    return 0
