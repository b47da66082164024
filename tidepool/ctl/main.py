"""Argument parsing and dispatch for `tidepool ctl`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from registry.client import STATES_BY_NAME
from tidepool.ctl.client import CtlError, RegistryClient
from tidepool.ctl.flags import OPTIONS, CtlParser, add_global_flags, finish
from tidepool.ctl.instances import cmd_drain, cmd_instances, cmd_restore, cmd_weight
from tidepool.ctl.render import (
    alias_json,
    aliases_table,
    json_text,
    tenant_json,
    tenants_table,
)
from tidepool.ctl.scheduling import cmd_move, cmd_moves, cmd_pools, cmd_top
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.options import ConfigError, parse_positive_float, resolve
from tidepool.runtime.rules import RuleError
from tidepool.runtime.selector import Selector, parse_selector

Command = Callable[[RegistryClient, argparse.Namespace], str | Iterable[str]]
"""A handler returns its text, or yields it in pieces when it comes over time."""
INTERRUPTED = 130


def cmd_alias_set(client: RegistryClient, args: argparse.Namespace) -> str:
    alias = pb.Alias(name=args.name, selector=args.selector, service=args.service)
    stored = client.call(client.admin.PutAlias, pb.PutAliasRequest(alias=alias))
    if args.json:
        return json_text(alias_json(stored))
    return f"alias {stored.name}: {stored.selector} (service {stored.service})\n"


def cmd_alias_list(client: RegistryClient, args: argparse.Namespace) -> str:
    response = client.call(client.registry.ListAliases, pb.ListAliasesRequest())
    if args.json:
        return json_text([alias_json(a) for a in response.aliases])
    return aliases_table(response.aliases)


def cmd_alias_delete(client: RegistryClient, args: argparse.Namespace) -> str:
    client.call(client.admin.DeleteAlias, pb.DeleteAliasRequest(name=args.name))
    return f"alias {args.name} deleted\n"


def cmd_tenant_set(client: RegistryClient, args: argparse.Namespace) -> str:
    aliases = [a.strip() for a in args.aliases.split(",")]
    route = pb.TenantRoute(tenant=args.tenant, lang=args.lang, aliases=aliases)
    stored = client.call(client.admin.PutTenant, pb.PutTenantRequest(route=route))
    if args.json:
        return json_text(tenant_json(stored))
    return f"tenant {stored.tenant}/{stored.lang}: {','.join(stored.aliases)}\n"


def cmd_tenant_list(client: RegistryClient, args: argparse.Namespace) -> str:
    response = client.call(client.registry.ListTenants, pb.ListTenantsRequest())
    if args.json:
        return json_text([tenant_json(t) for t in response.tenants])
    return tenants_table(response.tenants)


def cmd_tenant_delete(client: RegistryClient, args: argparse.Namespace) -> str:
    client.call(
        client.admin.DeleteTenant, pb.DeleteTenantRequest(tenant=args.tenant, lang=args.lang)
    )
    return f"tenant {args.tenant}/{args.lang} deleted\n"


def _command(sub: Any, name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    add_global_flags(parser, top=False)
    return parser


def _alias_commands(sub: Any) -> None:
    alias = sub.add_parser("alias", help="named pools and their routing rules").add_subparsers(
        dest="alias_command", required=True, metavar="{set,list,delete}"
    )
    p = _command(alias, "set", cmd_alias_set, "create or replace an alias")
    p.add_argument("name")
    p.add_argument("--selector", required=True, help="k=v[,k=a|b…]: all terms must hold")
    p.add_argument("--service", default="speech", help="service it selects from")
    _command(alias, "list", cmd_alias_list, "list aliases")
    _command(alias, "delete", cmd_alias_delete, "delete an alias").add_argument("name")


def _tenant_commands(sub: Any) -> None:
    tenant = sub.add_parser("tenant", help="per-tenant ordered alias lists").add_subparsers(
        dest="tenant_command", required=True, metavar="{set,list,delete}"
    )
    p = _command(tenant, "set", cmd_tenant_set, "set a tenant's ordered alias list")
    p.add_argument("tenant")
    p.add_argument("--lang", required=True, help="language, e.g. zh or en")
    p.add_argument("--aliases", required=True, help="A[,B…]: first with healthy instances wins")
    _command(tenant, "list", cmd_tenant_list, "list tenant routes")
    p = _command(tenant, "delete", cmd_tenant_delete, "delete a tenant route")
    p.add_argument("tenant")
    p.add_argument("--lang", required=True, help="language of the route to delete")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        return parse_positive_float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_move(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.source is not None and args.count is None:
        parser.error("--from needs --count N")
    if args.instance is not None and args.count is not None:
        parser.error("--count goes with --from, not --instance")


def _move_command(sub: Any) -> None:
    p = _command(
        sub,
        "move",
        cmd_move,
        "ask the scheduler to move engines to another pool: N chosen from a pool "
        "(least busy first), or one by id",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--from", dest="source", metavar="POOL", help="pool to take engines from")
    which.add_argument("--instance", metavar="ID", help="the one engine to move")
    p.add_argument("--to", required=True, metavar="POOL", help="pool to move them into")
    p.add_argument("--count", type=_count, metavar="N", help="how many (with --from), 1 or more")
    p.add_argument(
        "--wait", action="store_true", help="follow the moves until done (exit 1 if one rolls back)"
    )
    p.add_argument(
        "--timeout", type=_seconds, default=300.0, metavar="S", help="for --wait (default 300)"
    )
    p.set_defaults(check=lambda args: _check_move(p, args))


def _scheduling_commands(sub: Any) -> None:
    _command(sub, "pools", cmd_pools, "the pools as the scheduler last published them")
    _command(sub, "moves", cmd_moves, "moves in flight, then the last 100 finished")
    _move_command(sub)
    p = _command(sub, "top", cmd_top, "live view of pools, moves and engines (Ctrl-C quits)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="seconds between frames"
    )
    p.set_defaults(interrupt_code=0)


def _selector(text: str) -> Selector:
    try:
        return parse_selector(text)
    except RuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _weight(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 0..1000, got {value}")
    return value


def _instances_command(sub: Any) -> None:
    p = _command(
        sub,
        "instances",
        cmd_instances,
        "list instances, their state and load (WEIGHT is effective/registered)",
    )
    p.add_argument("--service", help="only this service")
    p.add_argument(
        "-l",
        "--selector",
        type=_selector,
        metavar="K=V[,K2=A|B]",
        help="only instances whose labels match (alias selector syntax: all terms must hold)",
    )
    p.add_argument(
        "--state",
        action="append",
        choices=[name for name in STATES_BY_NAME if name != "unspecified"],
        help="only instances in this state (repeat for several)",
    )
    p.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="print a line per change (state, weight, pool) as it happens, until Ctrl-C",
    )


def _admin_commands(sub: Any) -> None:
    p = _command(sub, "drain", cmd_drain, "stop new work to an instance; prints it after")
    p.add_argument("id", help="instance id")
    p = _command(sub, "restore", cmd_restore, "undo a drain; prints the instance after")
    p.add_argument("id", help="instance id")
    p = _command(sub, "weight", cmd_weight, "override an instance's weight; prints it after")
    p.add_argument("id", help="instance id")
    p.add_argument("weight", nargs="?", type=_weight, help="0..1000 (0 takes it out of routing)")
    p.add_argument("--clear", action="store_true", help="go back to the registered weight")


def parser() -> argparse.ArgumentParser:
    result = CtlParser(
        prog="tidepool ctl",
        description="Administer a registry. Global flags go before or after the command.",
    )
    add_global_flags(result, top=True)
    sub = result.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _instances_command(sub)
    _alias_commands(sub)
    _tenant_commands(sub)
    _admin_commands(sub)
    _scheduling_commands(sub)
    return result


def _write(output: str | Iterable[str]) -> None:
    for piece in [output] if isinstance(output, str) else output:
        sys.stdout.write(piece)
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `tidepool ctl`; returns the exit code."""
    args = finish(parser().parse_args(argv))
    if hasattr(args, "check"):
        args.check(args)
    try:
        settings = resolve(OPTIONS, args, os.environ if environ is None else environ)
    except ConfigError as exc:
        sys.stderr.write(f"tidepool ctl: {exc}\n")
        return 2
    client = RegistryClient(settings["registry"], settings["token"])
    try:
        _write(args.handler(client, args))
    except CtlError as exc:
        sys.stderr.write(f"tidepool ctl: {exc}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (`ctl top | head`): stop quietly, and point stdout at
        # /dev/null so the interpreter's last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        watching = getattr(args, "watch", False)
        code: int = 0 if watching else getattr(args, "interrupt_code", INTERRUPTED)
        if code:
            sys.stderr.write("tidepool ctl: interrupted\n")
        return code
    finally:
        client.close()
    return 0
