"""Command line: ``mysqlprobe replay`` (offline), ``mysqlprobe run`` (a node),
``mysqlprobe check-config FILE`` and ``mysqlprobe history top`` (a node's query history).

Owns argument parsing, exit codes and user-facing error lines. Bad input is one line on
stderr and exit code 2; a capture that is damaged part way still gets its report for what
was read, then the error line and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from typing import Any

from cluster.static import AddressError, split_address
from mysqlprobe import __version__

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


class UsageError(Exception):
    """A bad argument: the message names it."""


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    try:
        return split_address(text)
    except AddressError as exc:
        raise UsageError(f"bad address {exc}") from None


def _packed_addresses(host: str) -> frozenset[bytes]:
    try:
        return frozenset({ipaddress.ip_address(host).packed})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return frozenset(ipaddress.ip_address(info[4][0]).packed for info in infos)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is out of range 1-65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mysqlprobe", description="MySQL/MariaDB traffic analysis from the wire.")
    parser.add_argument("--version", action="version", version=f"mysqlprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    replay = sub.add_parser("replay", help="analyse a pcap/pcapng file (optionally gzip'd)")
    replay.add_argument("file", help="capture file")
    replay.add_argument("--port", type=_port, action="append", help="server port (repeatable; default 3306)")
    replay.add_argument("--server", help="HOST:PORT of the server: only its traffic is analysed")
    replay.add_argument("--slow-ms", type=_non_negative_float, default=1000.0, help="slow sample threshold (ms)")
    replay.add_argument("--format", choices=("table", "json", "html"), default="table")
    replay.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    replay.add_argument("--top", type=_positive, default=20, help="templates listed in the table (default 20)")
    replay.add_argument("--details", type=int, default=3, help="templates printed in full (default 3)")
    replay.add_argument(
        "--workers",
        type=_positive,
        default=min(2, os.cpu_count() or 1),
        help="processes analysing the file (default: up to 2 cores)",
    )
    replay.add_argument("--redact", action="store_true", help="slow samples show templates, not raw SQL")

    run = sub.add_parser("run", help="run a node (slave, master or standby) from a configuration file")
    run.add_argument("-c", "--config", default="config.yaml", help="configuration file (default config.yaml)")
    run.add_argument(
        "--fresh-state",
        action="store_true",
        help="move the state directory aside (to STATEDIR.old-TIMESTAMP) and start with a new one "
        "(a new incarnation: a master merges the new reports as new)",
    )

    check = sub.add_parser("check-config", help="validate a configuration file and print it with secrets masked")
    check.add_argument("file", help="configuration file")
    history = sub.add_parser("history", help="query history kept by a node (SQLite state directory or PostgreSQL)")
    history_sub = history.add_subparsers(dest="history_command", required=True)
    top = history_sub.add_parser("top", help="templates ranked over a time range")
    top.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="TIME",
        help="start: unix seconds, ISO 8601, now, or a time ago as --from=-15m (s, m, h, d)",
    )
    top.add_argument("--to", default="now", metavar="TIME", help="end (default now)")
    where = top.add_mutually_exclusive_group(required=True)
    where.add_argument("--state", help="a node's state directory (its history.sqlite3)")
    where.add_argument("--dsn", help="PostgreSQL DSN of a shared history store")
    top.add_argument("--server", help="only this server (HOST:PORT as in reports)")
    top.add_argument("--db", help="only this database")
    top.add_argument("--user", help="only this user")
    top.add_argument("--order", choices=("load", "calls", "errors", "p99"), default="load")
    top.add_argument("--top", type=_positive, default=20, help="templates listed (default 20)")
    top.add_argument("--details", type=int, default=3, help="templates printed in full (default 3)")
    top.add_argument("--format", choices=("table", "json"), default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from mysqlprobe.node import run_node

            return run_node(args.config, fresh_state=args.fresh_state)
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "history":
            import time

            from mysqlprobe.history import history_command

            return history_command(args, time.time_ns())
        return _replay(args)
    except UsageError as exc:
        print(f"mysqlprobe: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mysqlprobe replay ... | head`): stop quietly, as a tool
        # killed by SIGPIPE would, and keep the interpreter's final flush from failing again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _check_config(path: str) -> int:
    from mysqlprobe.config import ConfigError, load_config
    from mysqlprobe.config_check import effective_yaml

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"mysqlprobe: config error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(effective_yaml(config))
    return EXIT_OK


def _progress_bar() -> Any:
    """A tqdm bar on stderr when it is a terminal (shown after one second), else ``None``:
    tqdm is imported only then (25 ms of start-up otherwise)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(
        total=100,
        unit="%",
        delay=1.0,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}",
        desc="replay",
    )


def _replay(args: argparse.Namespace) -> int:
    from mysqlprobe.render import profile
    from mysqlprobe.replay import ReplayOptions, document, replay
    from probe.capture import CaptureError
    from probe.engine import EngineConfig

    ports = set(args.port or [])
    server_ips = None
    if args.server:
        host, port = parse_endpoint(args.server)
        ports.add(port)
        server_ips = _packed_addresses(host)
    config = EngineConfig(
        ports=frozenset(ports or {3306}),
        server_ips=server_ips,
        slow_threshold_us=int(args.slow_ms * 1000),
        redact=args.redact,
    )
    bar = _progress_bar()

    def progress(fraction: float) -> None:
        if bar is not None:
            bar.update(max(0.0, min(100.0, fraction * 100) - bar.n))

    try:
        result = replay(ReplayOptions(args.file, config, args.workers), progress)
    except CaptureError as exc:
        if bar is not None:
            bar.close()
        print(f"mysqlprobe: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if bar is not None:
        bar.update(100 - bar.n)
        bar.close()
    doc = document(result)
    if args.format == "json":
        text = json.dumps(doc, separators=(",", ":")) + "\n"
    elif args.format == "html":
        from mysqlprobe.dashboard import report_html

        text = report_html(doc)
    else:
        width = shutil.get_terminal_size((160, 24)).columns
        text = profile(doc, top=args.top, width=width, details=args.details)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            print(f"mysqlprobe: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if result.error:
        print(f"mysqlprobe: error: {result.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
