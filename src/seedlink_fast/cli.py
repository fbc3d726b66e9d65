"""Command line: ``seedlink-fast <command> ...``.

Each command lives in its own function and only turns arguments into calls
of the library; no logic here.
"""
import argparse
import logging
import sys

from ._version import __version__


def _cmd_dump(args):
    """Print one line per miniSEED record of each file (and check them)."""
    from .mseed import RecordError, unpack

    status = 0
    for path in args.files:
        with open(path, "rb") as fh:
            data = fh.read()
        if args.sl:
            # SeedLink capture: 8-byte "SLxxxxxx" headers before each record
            data = b"".join(data[i + 8:i + 520] for i in range(0, len(data) - 519, 520))
        try:
            records = unpack(data)
        except RecordError as exc:
            print("%s: %s" % (path, exc), file=sys.stderr)
            status = 1
            continue
        for rec in records:
            print("%s %06d %s %s %5d samples %g Hz tq=%s" % (
                path, rec.sequence_number, rec.id, _iso(rec.starttime_ns), rec.num_samples,
                rec.sample_rate, rec.timing_quality))
    return status


def _iso(ns):
    import datetime

    seconds, rest = divmod(ns, 10**9)
    stamp = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (rest // 1000)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="seedlink-fast",
        description="A drop-in SeedLink server with Cython hot paths.")
    parser.add_argument("-V", "--version", action="version",
                        version="seedlink-fast %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dump = sub.add_parser("dump", help="list and check the miniSEED records in files")
    dump.add_argument("files", nargs="+", metavar="FILE")
    dump.add_argument("--sl", action="store_true",
                      help="files are SeedLink captures (520-byte SL packets)")
    dump.set_defaults(func=_cmd_dump)

    from . import demo, replay, serve

    serve.add_subparser(sub)
    demo.add_subparser(sub)
    replay.add_subparser(sub)
    from .raw import plugin_main as raw_plugin_main

    raw_plugin_main.add_subparser(sub)
    from .picks import cli as picks_cli

    picks_cli.add_subparser(sub)
    from .benchtool import cli as bench_cli

    bench_cli.add_subparser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # SeisComP's line format: "Sun Nov 22 00:29:05 2026 - seedlink: ..."
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - seedlink-fast: %(message)s",
                        datefmt="%a %b %d %H:%M:%S %Y")
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
