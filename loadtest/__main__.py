"""`tidepool loadtest`: offer open-loop Evaluator load to a router or engine and report it.

The command line is the record of a benchmark, so it is printed first (token
hidden); progress goes to stderr once a second so a long run shows it is alive;
the summary table goes to stdout, with the first error message of each status,
and `--json` keeps everything for scripts. `python -m loadtest` runs the same.

Exit status:
  0    the run happened and at most `--max-error-rate` of the calls failed
  1    the target could not be reached at the start
  2    a bad flag, or flags that contradict each other (`--lang` against the
       language `--alias` or `--tenant --route-lang` implies)
  3    the run happened, but more calls failed than `--max-error-rate` allows
       (default 0.01); one line on stderr says so
  130  interrupted (Ctrl-C); the summary covers what was sent
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtest.config import (
    KINDS,
    MAX_ERROR_RATE,
    LangConflictError,
    LoadConfig,
    LoadConfigError,
    LoadError,
)
from loadtest.generator import run_load
from loadtest.result import Progress
from loadtest.verdict import EXIT_INTERRUPTED, EXIT_UNREACHABLE, judge
from tidepool.runtime.options import CommandParser

PROG = "tidepool loadtest"
MODULE_PROG = "python -m loadtest"
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
    "max_error_rate": "--max-error-rate",
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


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Open-loop gRPC load (Poisson arrivals) against tidepool's Evaluator API.",
        epilog="exit status: 0 done, 1 target unreachable, 2 bad flags,"
        " 3 more errors than --max-error-rate, 130 interrupted",
    )
    add = parser.add_argument
    add("--target", required=True, metavar="HOST:PORT", help="router or engine gRPC address")
    add("--rate", type=float, default=100.0, help="mean arrivals per second (default 100)")
    add("--duration", type=float, default=10.0, help="seconds of sending (default 10)")
    add("--processes", type=int, default=1, help="worker processes sharing the rate")
    add("--mix", type=parse_mix, default={"unary": 1.0}, help="e.g. unary=0.9,stream=0.1")
    add("--chunks", type=int, default=4, help="messages per EvaluateStream call (default 4)")
    add("--audio-bytes", type=int, default=1024, help="audio bytes per call (default 1024)")
    add(
        "--lang",
        default=None,
        help="lang field of the requests (default: the language --alias or --route-lang"
        " implies, e.g. en for en-public or public-en, else zh)",
    )
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
    add(
        "--max-error-rate",
        type=float,
        default=MAX_ERROR_RATE,
        metavar="FRACTION",
        help=f"exit 3 when more than this share of calls fail, 0 to 1 (default {MAX_ERROR_RATE})",
    )
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
        max_error_rate=args.max_error_rate,
    )


def config_error_line(exc: LoadConfigError) -> str:
    """A config error as the flags the user typed, with the way out of a contradiction."""
    if not isinstance(exc, LangConflictError):
        return f"{FLAGS.get(exc.field, exc.field)}: {exc.problem}"
    if exc.other == "alias":
        what, fix = "pool", f"pick {_article(exc.lang)} {exc.lang} alias"
    else:
        what, fix = "route", f"set --route-lang {exc.lang}"
    return (
        f"--lang {exc.lang} contradicts {FLAGS[exc.other]} {exc.other_value}"
        f" ({_article(exc.implied)} {exc.implied} {what}); drop --lang or {fix}"
    )


def _article(word: str) -> str:
    return "an" if word[:1] in tuple("aeiou") else "a"  # an en pool, a zh pool


def command_line(argv: Sequence[str] | None, prog: str = PROG) -> str:
    """The command as typed (`prog` and `argv` when given), with the token's value hidden."""
    words = list(sys.orig_argv) if argv is None else [*prog.split(), *argv]
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


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the command; `prog` is the name `--help` and errors show. Returns the exit status."""
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["day"]:  # the day simulator is its own command
        from loadtest.day.cli import main as day_main

        return day_main(list(words[1:]), prog=f"{prog} day")
    parser = build_parser(prog)
    args = parser.parse_args(words)
    try:
        config = config_from_args(args, os.environ)
    except LoadConfigError as exc:
        parser.error(config_error_line(exc))
    command = command_line(argv, prog)
    sys.stdout.write(f"command: {command}\n")
    sys.stdout.flush()
    try:
        result = run_load(config, on_progress=_show_progress)
    except LoadError as exc:  # TargetUnreachableError included
        sys.stderr.write(f"loadtest: {exc}\n")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        sys.stderr.write("loadtest: interrupted before the run started\n")
        return EXIT_INTERRUPTED
    sys.stdout.write(result.summary_table() + "\n")
    sys.stdout.flush()
    if args.json:
        document = {"command": command, **result.to_dict()}
        Path(args.json).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    verdict = judge(result)
    if verdict.complaint is not None:
        sys.stderr.write(f"loadtest: {verdict.complaint}\n")
    return verdict.status


if __name__ == "__main__":
    raise SystemExit(main(prog=MODULE_PROG))
