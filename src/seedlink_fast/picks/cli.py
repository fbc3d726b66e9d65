"""``seedlink-fast pick-client polling|streaming``: cut waveform windows
around picks (docs/pick-clients.md)."""
import argparse
import logging
import signal
import sys
import time

from .model import PickFilter

log = logging.getLogger("seedlink_fast.picks")

_EPILOG = """\
SOURCE: a pick file (.xml SCML/QuakeML, .jsonl), a directory to watch, - for
JSON lines on stdin, or tcp://HOST:PORT to listen for JSON lines.
URL: slink://host:port, fdsnws://host:port[/path], http(s)://..., sdsarchive:///dir.

examples:
  seedlink-fast pick-client polling --picks picks.xml --data fdsnws://localhost:8080 -o out
  seedlink-fast pick-client polling --picks - --data sdsarchive:///data/sds -o out < p.jsonl
  seedlink-fast pick-client streaming --picks tcp://127.0.0.1:18200 \\
      --data slink://localhost:18000 --archive fdsnws://localhost:8080 -o out
"""


# numeric options: flag, default (its type is the option's), metavar, help
_NUMBERS = (
    ("--before", 120.0, "S", "window start before the pick"),
    ("--after", 240.0, "S", "window end after the pick"),
    ("--expire", 1800.0, "S", "give up this long after the later of pick arrival and window end"),
    ("--interval", 30.0, "S", "polling: retry interval; streaming: archive retry interval"),
    ("--delay", 0.0, "S", "polling: first request this long after the window end"),
    ("--timeout", 30.0, "S", "network timeout of one fetch or connection step"),
    ("--tolerance", 1.5, "SAMPLES", "largest step between samples that is not a gap"),
    ("--max-pending", 1000, "N", "picks waiting at most"),
    ("--buffer", 3600.0, "S", "streaming: seconds of data kept per stream"),
    ("--buffer-mb", 512.0, "MB", "streaming: memory for buffered records"),
    ("--status", 60.0, "S", "status line interval, 0 = none"),
    ("--watch-interval", 1.0, "S", "directory source: scan interval"),
)


def _list(text):
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def add_subparser(sub):
    p = sub.add_parser(
        "pick-client", help="cut waveform windows around picks (polling or streaming)",
        description="Read picks and write, per pick, the waveform records of its window "
                    "(pick - before .. pick + after) for all components of the picked "
                    "stream.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("polling", "streaming"),
                   help="polling: ask an archive/dial-up source after each window ended; "
                        "streaming: buffer real-time SeedLink data")
    p.add_argument("--picks", required=True, metavar="SOURCE", help="where picks come from")
    p.add_argument("--data", required=True, metavar="URL",
                   help="waveform source (streaming: slink:// only)")
    p.add_argument("--archive", metavar="URL",
                   help="streaming: FDSN or SDS source for windows older than the buffer")
    p.add_argument("--inventory", metavar="FILE",
                   help="StationXML (or any ObsPy inventory) for the component lookup; "
                        "without it: Z/N/E, else Z/1/2")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="write <DIR>/<publicID>/{NET.STA.LOC.CHA.mseed,pick.xml,summary.json}")
    for flag, default, metavar, text in _NUMBERS:
        p.add_argument(flag, type=type(default), default=default, metavar=metavar,
                       help="%s (default %g)" % (text, default))
    p.add_argument("--phase", metavar="LIST", help="phase hints to use, e.g. P,Pn or 'P*'")
    p.add_argument("--mode", dest="eval_mode", metavar="LIST",
                   help="evaluation modes to use: automatic, manual")
    p.add_argument("--stations", metavar="LIST",
                   help="NET[.STA[.LOC[.CHA]]] patterns to use, !pattern to exclude")
    p.add_argument("-v", "--verbose", action="store_true", help="log every pick")
    p.set_defaults(func=run)


def make_client(args):
    """The client the arguments describe (ValueError for bad ones)."""
    from .polling import PollingClient
    from .streaming import StreamingClient

    common = dict(before=args.before, after=args.after, expire=args.expire,
                  tolerance=args.tolerance, max_pending=args.max_pending,
                  inventory=args.inventory, output=args.output, status_interval=args.status,
                  pick_filter=PickFilter(_list(args.phase), _list(args.eval_mode),
                                         _list(args.stations)))
    if args.mode == "polling":
        if args.archive:
            raise ValueError("--archive is for the streaming client; polling uses --data")
        return PollingClient(args.data, interval=args.interval, timeout=args.timeout,
                             delay=args.delay, **common)
    return StreamingClient(args.data, archive=args.archive, buffer_length=args.buffer,
                           buffer_bytes=int(args.buffer_mb * 2**20),
                           archive_delay=args.interval, timeout=args.timeout, **common)


def run(args):
    from .sources import open_pick_source

    if args.verbose:
        logging.getLogger("seedlink_fast.picks").setLevel(logging.DEBUG)
    try:
        client = make_client(args)
        source = open_pick_source(args.picks, interval=args.watch_interval)
    except (ValueError, OSError) as exc:
        print("seedlink-fast pick-client: %s" % exc, file=sys.stderr)
        return 2
    client.add_source(source)
    if hasattr(source, "port"):
        print("listening for picks on tcp://%s:%d" % (source.host, source.port), flush=True)
    started = time.monotonic()
    interrupted = False

    def on_signal(signum, frame):
        # the first Ctrl-C / SIGTERM ends the loop at a clean point (no half
        # written window); a second Ctrl-C interrupts whatever is running
        nonlocal interrupted
        if signum == signal.SIGINT:
            if interrupted:
                raise KeyboardInterrupt
            interrupted = True
        client.stop()

    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # keep nohup's choice
        handled.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        client.run()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    elapsed = time.monotonic() - started
    _print_summary(client, elapsed)
    if interrupted or client.pending:
        lines = client.pending_report()
        print("stopped with %d pick(s) pending%s" % (len(lines), ":" if lines else ""))
        for line in lines:
            print("  " + line)
        return 130 if interrupted else 0
    return 0


def _print_summary(client, elapsed):
    c = client.counts
    finished = c["complete"] + c["expired"]
    print("%d pick(s) finished in %.1f s: %d complete, %d expired; %d bad, %d duplicate, "
          "%d filtered" % (finished, elapsed, c["complete"], c["expired"], c["bad"],
                           c["duplicate"], c["filtered"]))
    for pid, status, missing in client.report:
        print("  %s %s%s" % (status, pid, (": " + "; ".join(missing)) if missing else ""))
