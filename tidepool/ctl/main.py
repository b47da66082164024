"""Argument parsing and dispatch for `tidepool ctl`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from registry.sdk.options import (
    CommandParser,
    ConfigError,
    Option,
    add_options,
    parse_host_port,
    parse_positive_float,
    resolve,
)
from tidepool.ctl.client import CtlError, RegistryClient
from tidepool.ctl.render import (
    alias_json,
    aliases_table,
    instance_json,
    instances_table,
    json_text,
    tenant_json,
    tenants_table,
)
from tidepool.ctl.scheduling import cmd_move, cmd_moves, cmd_pools, cmd_top
from tidepool.registry.v1 import registry_pb2 as pb


def _target(text: str) -> str:
    parse_host_port(text)
    return text


OPTIONS = (
    Option(
        "registry",
        "TIDEPOOL_REGISTRY",
        "127.0.0.1:7700",
        "registry gRPC address",
        _target,
        "HOST:PORT",
    ),
    Option("token", "TIDEPOOL_TOKEN", None, "admin (or read) token for the registry", str, "T"),
)

Command = Callable[[RegistryClient, argparse.Namespace], str | Iterable[str]]
"""A handler returns its text, or yields it in pieces when it comes over time."""
INTERRUPTED = 130


def cmd_instances(client: RegistryClient, args: argparse.Namespace) -> str:
    response = client.call(
        client.registry.ListInstances, pb.ListInstancesRequest(service=args.service or "")
    )
    if args.json:
        return json_text([instance_json(i) for i in response.instances])
    return instances_table(response.instances)


def cmd_alias_set(client: RegistryClient, args: argparse.Namespace) -> str:
    alias = pb.Alias(name=args.name, selector=args.selector, service=args.service)
    stored = client.call(client.admin.PutAlias, pb.PutAliasRequest(alias=alias))
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


def _instance_line(instance: pb.Instance) -> str:
    state = instance_json(instance)["state"]
    return f"{instance.id}: {state}, weight {instance.effective_weight}/{instance.weight}\n"


def cmd_drain(client: RegistryClient, args: argparse.Namespace) -> str:
    return _instance_line(client.call(client.admin.Drain, pb.DrainRequest(instance_id=args.id)))


def cmd_restore(client: RegistryClient, args: argparse.Namespace) -> str:
    request = pb.RestoreRequest(instance_id=args.id)
    return _instance_line(client.call(client.admin.Restore, request))


def cmd_weight(client: RegistryClient, args: argparse.Namespace) -> str:
    if args.weight is None and not args.clear:
        raise CtlError("weight: give a WEIGHT from 0 to 1000, or --clear")
    request = pb.SetWeightRequest(instance_id=args.id, weight=args.weight or 0, clear=args.clear)
    return _instance_line(client.call(client.admin.SetWeight, request))


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (shape in the README)")


def _command(sub: Any, name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _alias_commands(sub: Any) -> None:
    alias = sub.add_parser("alias", help="named pools and their routing rules").add_subparsers(
        dest="alias_command", required=True, metavar="{set,list,delete}"
    )
    p = _command(alias, "set", cmd_alias_set, "create or replace an alias")
    p.add_argument("name")
    p.add_argument("--selector", required=True, help="k=v[,k=a|b…]: all terms must hold")
    p.add_argument("--service", default="speech", help="service it selects from")
    _add_json(_command(alias, "list", cmd_alias_list, "list aliases"))
    _command(alias, "delete", cmd_alias_delete, "delete an alias").add_argument("name")


def _tenant_commands(sub: Any) -> None:
    tenant = sub.add_parser("tenant", help="per-tenant ordered alias lists").add_subparsers(
        dest="tenant_command", required=True, metavar="{set,list,delete}"
    )
    p = _command(tenant, "set", cmd_tenant_set, "set a tenant's ordered alias list")
    p.add_argument("tenant")
    p.add_argument("--lang", required=True, help="language, e.g. zh or en")
    p.add_argument("--aliases", required=True, help="A[,B…]: first with healthy instances wins")
    _add_json(_command(tenant, "list", cmd_tenant_list, "list tenant routes"))
    p = _command(tenant, "delete", cmd_tenant_delete, "delete a tenant route")
    p.add_argument("tenant")
    p.add_argument("--lang", required=True)


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
    _add_json(p)
    p.set_defaults(check=lambda args: _check_move(p, args))


def _scheduling_commands(sub: Any) -> None:
    p = _command(sub, "pools", cmd_pools, "the pools as the scheduler last published them")
    _add_json(p)
    p = _command(sub, "moves", cmd_moves, "moves in flight, then the last 100 finished")
    _add_json(p)
    _move_command(sub)
    p = _command(sub, "top", cmd_top, "live view of pools, moves and engines (Ctrl-C quits)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="seconds between frames"
    )
    p.set_defaults(interrupt_code=0)


def parser() -> argparse.ArgumentParser:
    result = CommandParser(prog="tidepool ctl", description="Administer a registry.")
    add_options(result, OPTIONS)
    sub = result.add_subparsers(dest="command", required=True)
    p = _command(sub, "instances", cmd_instances, "list instances, their state and load")
    p.add_argument("--service", help="only this service")
    _add_json(p)
    _alias_commands(sub)
    _tenant_commands(sub)
    _command(sub, "drain", cmd_drain, "stop new work to an instance").add_argument("id")
    _command(sub, "restore", cmd_restore, "undo a drain").add_argument("id")
    p = _command(sub, "weight", cmd_weight, "override an instance's weight")
    p.add_argument("id")
    p.add_argument("weight", nargs="?", type=int, help="0..1000")
    p.add_argument("--clear", action="store_true", help="go back to the registered weight")
    _scheduling_commands(sub)
    return result


def _write(output: str | Iterable[str]) -> None:
    for piece in [output] if isinstance(output, str) else output:
        sys.stdout.write(piece)
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `tidepool ctl`; returns the exit code."""
    args = parser().parse_args(argv)
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
        code: int = getattr(args, "interrupt_code", INTERRUPTED)
        if code:
            sys.stderr.write("tidepool ctl: interrupted\n")
        return code
    finally:
        client.close()
    return 0
