"""`tidepool loadtest day`: simulate a day of traffic under each strategy and compare them.

Exit status: 0 done; 2 a bad flag or an unusable trace, fleet or policy file
(one line on stderr naming the flag, file, line or key; never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from loadtest.day.arrivals import draw
from loadtest.day.day_policy import DAY_POLICY_TEXT
from loadtest.day.fleet_config import DEFAULT_FLEET_TEXT, FleetConfig, FleetError, parse_fleet
from loadtest.day.plot import PlotError, draw_day
from loadtest.day.report import DEFAULT_SLO_MS, document, summarize, table
from loadtest.day.simulate import DayRun, run_day
from loadtest.day.strategies import STRATEGIES, pool_of
from loadtest.day.traffic import LANGS, PROFILES, Trace, TraceError, parse_csv, profile
from scheduler.policy import Policy, PolicyError, load_policy, parse_policy
from tidepool.runtime.options import CommandParser

PROG = "tidepool loadtest day"
EPILOG = """\
strategies (all on the same requests, fleet prices, tiers and start times):
  static     per-language pools of idc engines, each sized so its own peak runs at the
             pool's target_utilization; never changes
  autoscale  the fleet's [owned] idc engines per language, plus reactive per-pool scaling:
             out above high_watermark (to target, cheapest tier starting within
             start_within_s), in below low_watermark after cooldown_s
  tidepool   the same owned engines, run by the scheduler's own decision code (tides
             between zh-public and en-public, tiered scaling, serverless given back first)

default fleet (--fleet): idc 0.8/engine-hour (owned, paid all day, speed 0.8), cvm 1.0
(180 s to start), serverless 1.5 (20 s); 4 slots each; model switch 60 s; 7 + 7 owned idc.
default policy (--policy): the scheduler's format with a 15 s tick, 120 s window, 300 s
cooldown, 900 s min stay, target 0.6, watermarks 0.3/0.8. Both are shown in the README.

peak_scale_outs counts scale-outs in the morning-peak window: the minute of the Chinese
maximum rate +- 2 hours. The CSV trace: header minute,tenant,lang,rate (minute 0-1439,
tenant may be empty, rate in requests/s held until the stream's next row).
exit status: 0 done, 2 bad flags or input files"""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Simulate a day of speech-evaluation traffic on a simulated clock against a\n"
        "simulated fleet, driving the pool scheduler's own decision code, and compare static\n"
        "pools, per-pool autoscaling and tidepool.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profile", choices=PROFILES, default=None,
                        help="built-in day of traffic (default weekday)")  # fmt: skip
    source.add_argument("--trace", metavar="FILE.csv", help="a CSV trace instead of a profile")
    add("--strategies", default=",".join(STRATEGIES),
        help=f"comma-separated, from {','.join(STRATEGIES)} (default all)")  # fmt: skip
    add("--seed", type=int, default=1, help="seed of arrivals and audio lengths (default 1)")
    add("--fleet", metavar="FILE.toml", help="simulated fleet (default: the one in the README)")
    add("--policy", metavar="FILE.toml", help="scheduler policy (default: the day policy)")
    add("--slo-ms", type=float, default=DEFAULT_SLO_MS,
        help=f"latency target, ms: slower is an SLO miss (default {DEFAULT_SLO_MS:g})")  # fmt: skip
    add("--json", metavar="PATH", help="write the figures here")
    add("--plot", metavar="PATH.png", help="draw the day here (needs matplotlib)")
    return parser


def _strategies(text: str, parser: argparse.ArgumentParser) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown or not names or len(set(names)) != len(names):
        parser.error(
            f"--strategies: expected distinct names from {','.join(STRATEGIES)}, got {text!r}"
        )
    return names


def _read(path: str, flag: str, parser: argparse.ArgumentParser) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        parser.error(f"{flag}: cannot read {path}: {getattr(error, 'strerror', None) or error}")


def _inputs(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[Trace, FleetConfig, Policy]:
    try:
        if args.trace:
            trace = parse_csv(_read(args.trace, "--trace", parser), source=args.trace)
        else:
            trace = profile(args.profile or "weekday")
    except TraceError as error:
        parser.error(f"--trace: {error}")
    try:
        fleet_text = _read(args.fleet, "--fleet", parser) if args.fleet else DEFAULT_FLEET_TEXT
        fleet = parse_fleet(fleet_text, source=args.fleet or "<default fleet>")
    except FleetError as error:
        parser.error(f"--fleet: {error}")
    try:
        policy = load_policy(args.policy) if args.policy else parse_policy(DAY_POLICY_TEXT)
        for lang in LANGS:
            pool_of(policy, lang)
    except (PolicyError, ValueError) as error:
        parser.error(f"--policy: {error}")
    return trace, fleet, fleet.for_policy(policy)


def _progress(strategy: str, now_s: float) -> None:
    hours, rest = divmod(int(now_s), 3600)
    sys.stderr.write(f"day: {strategy:<9} simulated {hours:02d}:{rest // 60:02d}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    names = _strategies(args.strategies, parser)
    if args.slo_ms <= 0:
        parser.error(f"--slo-ms: must be greater than 0, got {args.slo_ms:g}")
    trace, fleet, policy = _inputs(args, parser)
    started = time.perf_counter()
    requests = draw(trace, args.seed)
    runs: dict[str, DayRun] = {}
    for name in names:
        runs[name] = run_day(name, policy, fleet, trace, requests, on_progress=_progress)
        _progress(name, 86400.0)
    window = trace.peak_window_s()
    summaries = {name: summarize(run, fleet, window, args.slo_ms) for name, run in runs.items()}
    source = args.trace or args.profile or "weekday"
    sys.stdout.write(f"day: {source}, seed {args.seed}, slo {args.slo_ms:g} ms, morning peak"
                     f" {_clock(window[0])}-{_clock(window[1])}\n")  # fmt: skip
    sys.stdout.write(table(summaries) + "\n")
    sys.stdout.flush()
    extra = {
        "slo_ms": args.slo_ms,
        "peak_window": [_clock(window[0]), _clock(window[1])],
        "fleet": args.fleet or "default",
        "policy": args.policy or "default",
        "wall_s": round(time.perf_counter() - started, 2),
    }
    if args.json:
        text = json.dumps(document(summaries, seed=args.seed, source=source, extra=extra), indent=2)
        try:
            Path(args.json).write_text(text + "\n")
        except OSError as error:
            parser.error(f"--json: cannot write {args.json}: {error.strerror or error}")
    if args.plot:
        try:
            draw_day(args.plot, trace, runs, f"{source}, seed {args.seed}")
        except PlotError as error:
            parser.error(f"--plot: {error}")
    return 0


def _clock(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m loadtest.day.cli"))
