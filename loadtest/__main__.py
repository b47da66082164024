"""`python -m loadtest`: offer open-loop Evaluator load to a router or engine and report it.

The command line is the record of a benchmark, so it is printed first (token
hidden); progress goes to stderr once a second so a long run shows it is alive;
the summary table goes to stdout and `--json` keeps everything for scripts.
Exit status: 0 when the run happened (call errors are results, not failures),
1 when the target could not be reached at the start, 2 on a bad flag.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtest.config import KINDS, LoadConfig, LoadConfigError, LoadError
from loadtest.generator import run_load
from loadtest.result import Progress
from registry.sdk.options import CommandParser

PROG = "python -m loadtest"
TOKEN_ENV = "TIDEPOOL_TOKEN"
FLAGS = {
    "target": "--target",
    "rate_per_s": "--rate",
    "duration_s": "--duration",
    "processes": "--processes",
    "mix": "--mix",
    "chunks": "--chunks",
    "audio_bytes": "--audio-bytes",
    "lang": "--lang",
    "text": "--text",
    "alias": "--alias",
    "tenant": "--tenant",
    "route_lang": "--route-lang",
    "token": "--token",
    "timeout_s": "--timeout",
    "concurrency": "--concurrency",
    "max_in_flight": "--max-in-flight",
    "seed": "--seed",
    "connect_timeout_s": "--connect-timeout",
    "channels": "--channels",
}
"""LoadConfig field → the flag that sets it, so a config error names the flag."""


def parse_mix(text: str) -> dict[str, float]:
    """`unary=0.9,stream=0.1` → {"unary": 0.9, "stream": 0.1}."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, weight = part.partition("=")
        try:
            if not sep or kind not in KINDS:
                raise ValueError
            mix[kind] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected KIND=WEIGHT,... with KIND in {'/'.join(KINDS)}, got {text!r}"
            ) from None
    if not mix:
        raise argparse.ArgumentTypeError(f"expected KIND=WEIGHT,..., got {text!r}")
    return mix


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Open-loop gRPC load (Poisson arrivals) against tidepool's Evaluator API.",
    )
    add = parser.add_argument
    add("--target", required=True, metavar="HOST:PORT", help="router or engine gRPC address")
    add("--rate", type=float, default=100.0, help="mean arrivals per second (default 100)")
    add("--duration", type=float, default=10.0, help="seconds of sending (default 10)")
    add("--processes", type=int, default=1, help="worker processes sharing the rate")
    add("--mix", type=parse_mix, default={"unary": 1.0}, help="e.g. unary=0.9,stream=0.1")
    add("--chunks", type=int, default=4, help="messages per EvaluateStream call (default 4)")
    add("--audio-bytes", type=int, default=1024, help="audio bytes per call (default 1024)")
    add("--lang", default="zh", help="lang field of the request (default zh)")
    add("--text", default=None, help="reference text (default: a phrase in --lang)")
    add("--alias", default=None, help="send x-tidepool-alias")
    add("--tenant", default=None, help="send x-tidepool-tenant (and x-tidepool-lang)")
    add("--route-lang", default=None, help="x-tidepool-lang (default --lang with --tenant)")
    add("--token", default=None, help=f"bearer token for the calls [env {TOKEN_ENV}]")
    add("--timeout", type=float, default=10.0, help="per-call deadline, seconds (default 10)")
    add("--concurrency", type=int, default=None, help="closed loop: N callers, ignores --rate")
    add("--max-in-flight", type=int, default=10_000, help="drop arrivals beyond this many")
    add("--seed", type=int, default=1, help="seed of the arrival schedule (default 1)")
    add("--connect-timeout", type=float, default=5.0, help="seconds to reach the target")
    add("--channels", type=int, default=1, help="gRPC connections per process (default 1)")
    add("--json", default=None, metavar="PATH", help="write the full result here")
    return parser


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> LoadConfig:
    """The LoadConfig the flags describe; LoadConfigError names the bad field."""
    return LoadConfig(
        target=args.target,
        rate_per_s=args.rate,
        duration_s=args.duration,
        processes=args.processes,
        mix=args.mix,
        chunks=args.chunks,
        audio_bytes=args.audio_bytes,
        lang=args.lang,
        text=args.text,
        alias=args.alias,
        tenant=args.tenant,
        route_lang=args.route_lang,
        token=args.token or environ.get(TOKEN_ENV) or None,
        timeout_s=args.timeout,
        concurrency=args.concurrency,
        max_in_flight=args.max_in_flight,
        seed=args.seed,
        connect_timeout_s=args.connect_timeout,
        channels=args.channels,
    )


def command_line(argv: Sequence[str] | None) -> str:
    """The command as typed, with the token's value hidden."""
    words = list(sys.orig_argv) if argv is None else [sys.executable, "-m", "loadtest", *argv]
    shown: list[str] = []
    for word in words:
        if shown and shown[-1] == "--token":
            word = "REDACTED"
        elif word.startswith("--token="):
            word = "--token=REDACTED"
        shown.append(word)
    return shlex.join(shown)


def _show_progress(progress: Progress) -> None:
    rate = progress.sent / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    sys.stderr.write(
        f"loadtest: {progress.elapsed_s:5.1f}s  sent {progress.sent} ({rate:.1f}/s)"
        f"  ok {progress.ok}  errors {progress.errors}  dropped {progress.dropped}"
        f"  late {progress.late}\n"
    )
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_args(args, os.environ)
    except LoadConfigError as exc:
        parser.error(f"{FLAGS.get(exc.field, exc.field)}: {exc.problem}")
    command = command_line(argv)
    sys.stdout.write(f"command: {command}\n")
    sys.stdout.flush()
    try:
        result = run_load(config, on_progress=_show_progress)
    except LoadError as exc:  # TargetUnreachableError included
        sys.stderr.write(f"loadtest: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("loadtest: interrupted before the run started\n")
        return 130
    sys.stdout.write(result.summary_table() + "\n")
    if args.json:
        document = {"command": command, **result.to_dict()}
        Path(args.json).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
