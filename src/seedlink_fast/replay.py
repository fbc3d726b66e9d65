"""``seedlink-fast replay``: run a plugin byte stream through the stream
processor offline and write each station's records to a file.

Operators use it to check a ``streams.xml`` and ``filters.fir`` before
deploying them; the records are those the server would store, in sequence
order, byte for byte.
"""
import logging
import sys
import time

from .errors import ConfigError, PluginProtocolError
from .inifile import load_ini
from .streamproc import replay_file

log = logging.getLogger("seedlink_fast.replay")


def add_subparser(sub):
    p = sub.add_parser(
        "replay", help="run a plugin packet stream through the stream processor",
        description="Read a SeisComP plugin (fd 63) byte stream, run it through the "
                    "stream processor configured by seedlink.ini, and write "
                    "OUTDIR/<station key>.mseed for every station with records.")
    p.add_argument("-f", "--config-file", required=True, metavar="SEEDLINK_INI",
                   help="SeisComP seedlink.ini")
    p.add_argument("--section", default="seedlink",
                   help="ini section to read (default: seedlink)")
    p.add_argument("--plugin", metavar="NAME",
                   help="plugin whose proc= applies (default: the only plugin, if one)")
    p.add_argument("--no-shutdown-flush", action="store_true",
                   help="drop the partial record of each stream at the end, as SeisComP does")
    p.add_argument("input", metavar="INPUT.plugin")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.set_defaults(func=run)


def run(args):
    try:
        config = load_ini(args.config_file, section=args.section)
    except (ConfigError, OSError) as exc:
        print("seedlink-fast replay: %s" % exc, file=sys.stderr)
        return 2
    plugin = None
    if args.plugin:
        plugin = config.plugin(args.plugin)
        if plugin is None:
            print("seedlink-fast replay: no plugin %r in %s" % (args.plugin, args.config_file),
                  file=sys.stderr)
            return 2
    elif len(config.plugins) == 1:
        plugin = config.plugins[0]
    started = time.perf_counter()
    status = 0
    try:
        counts = replay_file(config, args.input, args.output, plugin=plugin,
                             flush_on_shutdown=not args.no_shutdown_flush)
    except PluginProtocolError as exc:
        log.error("%s; the records before it were written", exc)
        counts, status = {}, 1
    except (ConfigError, OSError) as exc:
        print("seedlink-fast replay: %s" % exc, file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    for key, n in sorted(counts.items()):
        print("%s: %d records -> %s/%s.mseed" % (key, n, args.output, key))
    log.info("replayed %s in %.3f s", args.input, elapsed)
    return status
