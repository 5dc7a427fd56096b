"""`actorstack`: the command line. Each subcommand runs one role or one operator task."""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog

from actors.errors import ServiceUnreachable
from actors.runtime import RuntimeSettings
from actorstack import logs, roles
from actorstack.config import Settings, redact

log = structlog.get_logger("actorstack")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="PostgreSQL URL (env ACTORSTACK_DATABASE_URL)")
    common.add_argument("--amqp-url", help="RabbitMQ URL (env ACTORSTACK_AMQP_URL)")
    common.add_argument("--state-dir", help="instances, images, volumes (env ACTORSTACK_STATE_DIR)")
    common.add_argument("--log-format", choices=["auto", "console", "json"], default="auto")
    common.add_argument("--log-level", default="info")

    parser = argparse.ArgumentParser(
        prog="actorstack", description="A compact OpenStack-compatible cloud built from actors.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dbp = commands.add_parser("db", help="database administration", parents=[common])
    dbc = dbp.add_subparsers(dest="db_command", required=True)
    dbc.add_parser("init", help="create the schema, or upgrade it with migrations", parents=[common])

    runtime_flags = argparse.ArgumentParser(add_help=False)
    runtime_flags.add_argument("--load", action="append", default=[], metavar="MODULE",
                               help="also host the actor kinds in MODULE.KINDS")
    runtime_flags.add_argument("--heartbeat", type=float, default=1.0, help="membership heartbeat (s)")
    runtime_flags.add_argument("--member-timeout", type=float, default=5.0,
                               help="a member silent this long is considered gone (s)")
    runtime_flags.add_argument("--handler-attempts", type=int, default=5,
                               help="tries of a failing handler before its message is dead-lettered")
    runtime_flags.add_argument("--backoff", type=float, default=0.05, help="first retry delay (s)")
    runtime_flags.add_argument("--passivate-after", type=float, default=300.0,
                               help="drop an actor from memory after this long idle (s)")

    commands.add_parser("up", help="run the whole cloud in one process", parents=[common, runtime_flags])
    commands.add_parser("runtime", help="run the actor runtime role only", parents=[common, runtime_flags])
    return parser


def _runtime_settings(args: argparse.Namespace) -> RuntimeSettings:
    return RuntimeSettings(
        heartbeat=args.heartbeat,
        member_timeout=args.member_timeout,
        handler_attempts=args.handler_attempts,
        backoff_initial=args.backoff,
        passivate_after=args.passivate_after,
    )


async def _db_init(settings: Settings) -> int:
    before, after = await roles.init_database(settings)
    where = redact(settings.database_url)
    if before is None:
        print(f"initialised {where} at schema version {after}")
    elif before == after:
        print(f"{where} is already at schema version {after}; nothing to do")
    else:
        print(f"upgraded {where} from schema version {before} to {after}")
    return 0


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    await roles.init_database(settings)
    stop = roles.stop_on_signals()
    kinds = roles.builtin_kinds() + roles.load_kinds(args.load)
    print(f"actorstack is up (database {redact(settings.database_url)}, broker "
          f"{redact(settings.amqp_url)}); Ctrl-C stops it", file=sys.stderr, flush=True)
    await roles.run_runtime(settings, kinds, _runtime_settings(args), stop)
    return 0


async def _runtime(settings: Settings, args: argparse.Namespace) -> int:
    stop = roles.stop_on_signals()
    kinds = roles.builtin_kinds() + roles.load_kinds(args.load)
    await roles.run_runtime(settings, kinds, _runtime_settings(args), stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    settings = Settings.from_env(
        database_url=args.database_url, amqp_url=args.amqp_url, state_dir=args.state_dir
    )
    if args.command == "db":
        coro = _db_init(settings)
    elif args.command == "up":
        coro = _up(settings, args)
    else:
        coro = _runtime(settings, args)
    try:
        return asyncio.run(coro)
    except (ServiceUnreachable, roles.NotInitialised) as exc:
        print(f"actorstack: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
