"""`actorstack`: the command line. Each subcommand runs one role or one operator task."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import sys

import structlog

from actors import db
from actors.errors import ServiceUnreachable
from actors.runtime import RuntimeSettings
from actorstack import events_cli, logs, roles, testimage
from actorstack.config import Settings, redact
from api.bootstrap import clouds_yaml, openrc
from hostagent.virt import VIRT_TYPES, VirtError

log = structlog.get_logger("actorstack")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="PostgreSQL URL (env ACTORSTACK_DATABASE_URL)")
    common.add_argument("--amqp-url", help="RabbitMQ URL (env ACTORSTACK_AMQP_URL)")
    common.add_argument("--state-dir", help="instances, images, volumes (env ACTORSTACK_STATE_DIR)")
    common.add_argument("--log-format", choices=["auto", "console", "json"], default="auto")
    common.add_argument("--log-level", default="info")

    parser = argparse.ArgumentParser(
        prog="actorstack",
        description="A compact OpenStack-compatible cloud built from actors.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dbp = commands.add_parser("db", help="database administration", parents=[common])
    dbc = dbp.add_subparsers(dest="db_command", required=True)
    dbc.add_parser("init", help="create the schema, or upgrade it with migrations", parents=[common])

    runtime_flags = argparse.ArgumentParser(add_help=False)
    runtime_flags.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="MODULE",
        help="also host the actor kinds in MODULE.KINDS",
    )
    runtime_flags.add_argument("--heartbeat", type=float, default=1.0, help="membership heartbeat (s)")
    runtime_flags.add_argument(
        "--member-timeout", type=float, default=5.0, help="a member silent this long is considered gone (s)"
    )
    runtime_flags.add_argument(
        "--handler-attempts",
        type=int,
        default=5,
        help="tries of a failing handler before its message is dead-lettered",
    )
    runtime_flags.add_argument("--backoff", type=float, default=0.05, help="first retry delay (s)")
    runtime_flags.add_argument(
        "--passivate-after",
        type=float,
        default=300.0,
        help="drop an actor from memory after this long idle (s)",
    )

    api_flags = argparse.ArgumentParser(add_help=False)
    api_flags.add_argument(
        "--listen",
        default=os.environ.get("ACTORSTACK_LISTEN", "127.0.0.1:8770"),
        help="host:port of the API (env ACTORSTACK_LISTEN)",
    )
    api_flags.add_argument(
        "--public-url",
        default=os.environ.get("ACTORSTACK_PUBLIC_URL"),
        help="the API's URL as clients reach it (default http://LISTEN)",
    )
    api_flags.add_argument(
        "--token-ttl",
        type=float,
        default=float(os.environ.get("ACTORSTACK_TOKEN_TTL", 3600)),
        help="token lifetime in seconds",
    )
    api_flags.add_argument(
        "--no-commands",
        action="store_true",
        help="do not consume the AMQP command queue (protocol/README.md)",
    )

    host_flags = argparse.ArgumentParser(add_help=False)
    host_flags.add_argument(
        "--virt",
        choices=VIRT_TYPES,
        default="test",
        help="hypervisor: libvirt's test driver, or real guests on qemu:///system",
    )
    host_flags.add_argument(
        "--domain-type",
        choices=["auto", "kvm", "qemu"],
        default="auto",
        help="with --virt qemu: kvm, qemu (TCG), or auto (kvm only on bare metal)",
    )
    host_flags.add_argument("--availability-zone", default="nova")
    host_flags.add_argument("--host-ip", default="127.0.0.1")
    host_flags.add_argument(
        "--tunnel-ip",
        default=os.environ.get("ACTORSTACK_TUNNEL_IP"),
        help="this machine's underlay address: tenant networks reach the other hosts by VXLAN from it "
        "(env ACTORSTACK_TUNNEL_IP; default: none, networks stay on this machine)",
    )
    host_flags.add_argument(
        "--host-heartbeat",
        type=float,
        default=10.0,
        help="compute host heartbeat (s); hosts silent for 30 s are down",
    )
    host_flags.add_argument("--sync-interval", type=float, default=10.0, help="power-state sync period (s)")
    host_flags.add_argument(
        "--dhcp-namespace-prefix",
        default="qdhcp-",
        help="the DHCP namespaces' names' start (hosts simulated on one machine need their own)",
    )
    host_flags.add_argument("--cpu-allocation-ratio", type=float, default=4.0)
    host_flags.add_argument("--ram-allocation-ratio", type=float, default=1.0)
    host_flags.add_argument("--disk-allocation-ratio", type=float, default=1.0)
    host_flags.add_argument(
        "--reserved-host-memory-mb",
        type=int,
        default=None,
        help="RAM kept from guests (default: 0 with --virt test, 512 with qemu)",
    )
    host_flags.add_argument(
        "--shutdown-timeout",
        type=float,
        default=60.0,
        help="how long a stop waits for the guest to shut down before destroying it (s)",
    )
    host_flags.add_argument(
        "--network",
        choices=["auto", "linux", "none"],
        default=os.environ.get("ACTORSTACK_NETWORK", "auto"),
        help="bridges, taps, DHCP and metadata in this kernel (linux, root only), none, "
        "or auto: linux when run as root",
    )
    host_flags.add_argument(
        "--storage",
        choices=["file", "none"],
        default=os.environ.get("ACTORSTACK_STORAGE", "file"),
        help="a storage agent for volumes: qcow2 files under <state dir>/volumes, or none",
    )

    up = commands.add_parser(
        "up",
        help="run the whole cloud in one process",
        parents=[common, runtime_flags, api_flags, host_flags],
    )
    up.add_argument(
        "--hosts",
        type=int,
        default=1,
        metavar="N",
        help="host agents to run in this process, named <hostname>-1 … -N (0: none)",
    )
    commands.add_parser("runtime", help="run the actor runtime role only", parents=[common, runtime_flags])
    commands.add_parser("api", help="run the API role only", parents=[common, api_flags])
    agent = commands.add_parser(
        "hostagent", help="run the host agent role for this compute host", parents=[common, host_flags]
    )
    agent.add_argument("--name", default=socket.gethostname(), help="the host's name (default: the hostname)")
    agent.add_argument(
        "--control-url",
        default=os.environ.get("ACTORSTACK_CONTROL_URL"),
        help="the cloud's API, whose internal API the agent reads (env ACTORSTACK_CONTROL_URL)",
    )
    agent.add_argument(
        "--host-token",
        default=os.environ.get("ACTORSTACK_HOST_TOKEN"),
        help="the host's credential for the internal API (env ACTORSTACK_HOST_TOKEN; "
        "`actorstack host credentials NAME` prints it)",
    )
    host_p = commands.add_parser("host", help="compute hosts on other machines", parents=[common])
    host_commands = host_p.add_subparsers(dest="host_command", required=True)
    creds = host_commands.add_parser(
        "credentials",
        parents=[common],
        help="print the host token for a host agent (and its storage agent) on another machine",
    )
    creds.add_argument("names", nargs="+", metavar="NAME", help="the agents' names: NAME, NAME@file, …")
    creds.add_argument(
        "--broker-user",
        action="store_true",
        help="also make a RabbitMQ user that may read only these agents' queues (needs rabbitmqctl)",
    )
    creds.add_argument("--control-url", help="the cloud's API URL, written into the output")
    revoke_p = host_commands.add_parser(
        "revoke", parents=[common], help="delete the broker user `host credentials --broker-user` made"
    )
    revoke_p.add_argument("names", nargs="+", metavar="NAME")
    commands.add_parser(
        "bootstrap",
        help="create the admin user and project and the default flavors",
        parents=[common, api_flags],
    )
    openrc_p = commands.add_parser(
        "openrc",
        help="print the OS_* variables for the openstack CLI (or clouds.yaml)",
        parents=[common, api_flags],
    )
    openrc_p.add_argument("--clouds-yaml", action="store_true", help="print a clouds.yaml entry instead")
    up.add_argument(
        "--no-test-image",
        dest="test_image",
        action="store_false",
        help="with --virt qemu: do not build and register the actorstack-test image",
    )
    events = commands.add_parser(
        "events", help="tail the event stream (signs in with the OS_* variables)", parents=[common]
    )
    events_cli.add_arguments(events)
    image = commands.add_parser("testimage", help="the tiny bootable test image", parents=[common])
    image_commands = image.add_subparsers(dest="testimage_command", required=True)
    build = image_commands.add_parser(
        "build", parents=[common], help="build it (once; cached in <state dir>/testimage) and print its path"
    )
    build.add_argument("--force", action="store_true", help="build again even when a cached one matches")
    doctor_p = commands.add_parser(
        "doctor",
        parents=[common],
        help="list what the cloud did not settle (stuck states, orphans); --fix repairs",
    )
    doctor_p.add_argument("--fix", action="store_true", help="repair what is safe, through the actors")
    doctor_p.add_argument("--format", dest="doctor_format", choices=["table", "json"], default="table")
    doctor_p.add_argument(
        "--older-than",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a transitional state or an orphan this old (and not driven by a timer) is a finding",
    )
    doctor_p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --fix: how long to wait for the repairs to show",
    )
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


def _api_options(args: argparse.Namespace) -> roles.ApiOptions:
    return roles.ApiOptions(
        listen=args.listen,
        public_url=args.public_url,
        token_ttl=args.token_ttl,
        commands=not args.no_commands,
    )


def _host_options(
    args: argparse.Namespace, names: tuple[str, ...], *, own_directories: bool
) -> roles.HostOptions:
    return roles.HostOptions(
        names=names,
        virt=args.virt,
        domain_type=args.domain_type,
        own_directories=own_directories,
        availability_zone=args.availability_zone,
        host_ip=args.host_ip,
        tunnel_ip=args.tunnel_ip,
        dhcp_namespace_prefix=args.dhcp_namespace_prefix,
        heartbeat=args.host_heartbeat,
        sync_interval=args.sync_interval,
        cpu_allocation_ratio=args.cpu_allocation_ratio,
        ram_allocation_ratio=args.ram_allocation_ratio,
        disk_allocation_ratio=args.disk_allocation_ratio,
        reserved_memory_mb=args.reserved_host_memory_mb,
        shutdown_timeout=args.shutdown_timeout,
        network=args.network,
        storage=args.storage,
    )


def _admin_password() -> str:
    return os.environ.get("ACTORSTACK_ADMIN_PASSWORD", "admin")


async def _bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    await roles.init_database(settings)
    await roles.bootstrap(settings, _admin_password())
    print(openrc(_api_options(args).base_url, _admin_password()))
    return 0


async def _openrc(settings: Settings, args: argparse.Namespace) -> int:
    base = _api_options(args).base_url
    print(clouds_yaml(base, _admin_password()) if args.clouds_yaml else openrc(base, _admin_password()))
    return 0


async def _testimage(settings: Settings, args: argparse.Namespace) -> int:
    try:
        image = await asyncio.to_thread(testimage.build, settings.state_dir, force=args.force)
    except OSError as exc:  # the state directory is not writable here, the disk is full, …
        raise testimage.BuildError(f"cannot write the test image under {settings.state_dir}: {exc}") from None
    print(image.path)
    print(
        f"Upload it with:\n  openstack image create --disk-format qcow2 --container-format bare --public "
        f"--min-ram 128 --file {image.path} {testimage.NAME}",
        file=sys.stderr,
    )
    return 0


async def _events(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return await events_cli.tail(args)
    except events_cli.EventsError as exc:
        print(f"actorstack events: {exc}", file=sys.stderr)
        return 2


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from actorstack import doctor

    return await doctor.run(
        settings.database_url,
        fix=args.fix,
        fmt=args.doctor_format,
        older_than=args.older_than,
        wait=args.wait,
    )


async def _register_test_image(settings: Settings, project_id: str) -> None:
    """`up --virt qemu`: the test image as the public image actorstack-test (built if need be)."""
    from api.image import seed

    try:
        image = await asyncio.to_thread(testimage.build, settings.state_dir)
    except (testimage.BuildError, OSError) as exc:
        log.warning("no test image: servers boot only the images you upload", reason=str(exc))
        return
    pool = await db.create_pool(settings.database_url)
    try:
        image_id, new = await seed.register(
            pool,
            settings.state_dir,
            image.path,
            name=testimage.NAME,
            owner=project_id,
            disk_format="qcow2",
            build_property="actorstack_testimage",
            properties=image.properties,
            min_ram=testimage.MIN_RAM_MB,
        )
    finally:
        await pool.close()
    log.info(
        "test image registered" if new else "test image present", image=testimage.NAME, image_id=image_id
    )


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    await roles.init_database(settings)
    await roles.ensure_vhost(settings.amqp_url)
    admin = await roles.bootstrap(settings, _admin_password())
    if args.virt == "qemu" and args.test_image:
        await _register_test_image(settings, admin["project_id"])
    stop = roles.stop_on_signals()
    kinds = roles.builtin_kinds() + roles.load_kinds(args.load)
    api = _api_options(args)
    hosts = _host_options(args, roles.simulated_host_names(max(0, args.hosts)), own_directories=True)

    def ready() -> None:
        agents = (
            f"{len(hosts.names)} host agent(s) on --virt {hosts.virt}" if hosts.names else "no host agents"
        )
        print(
            f"actorstack is up: API {api.base_url}, {agents}, database {redact(settings.database_url)}, "
            f"broker {redact(settings.amqp_url)}. Ctrl-C stops it.\n"
            f"Point the openstack CLI at it with:\n\n{openrc(api.base_url, _admin_password())}\n",
            file=sys.stderr,
            flush=True,
        )

    await roles.run_roles(
        settings,
        stop,
        kinds=kinds,
        runtime_settings=_runtime_settings(args),
        api=api,
        hosts=hosts,
        on_ready=ready,
    )
    return 0


async def _runtime(settings: Settings, args: argparse.Namespace) -> int:
    stop = roles.stop_on_signals()
    kinds = roles.builtin_kinds() + roles.load_kinds(args.load)
    await roles.run_roles(settings, stop, kinds=kinds, runtime_settings=_runtime_settings(args))
    return 0


async def _api(settings: Settings, args: argparse.Namespace) -> int:
    stop = roles.stop_on_signals()
    await roles.run_roles(settings, stop, api=_api_options(args))
    return 0


async def _hostagent(settings: Settings, args: argparse.Namespace) -> int:
    stop = roles.stop_on_signals()
    options = dataclasses.replace(
        _host_options(args, (args.name,), own_directories=False),
        storage_name=f"{args.name}@file",
        control_url=args.control_url,
        host_token=args.host_token,
    )
    await roles.run_roles(settings, stop, hosts=options)
    return 0


async def _host(settings: Settings, args: argparse.Namespace) -> int:
    from actorstack import hostcreds

    try:
        if args.host_command == "revoke":
            revoked = await asyncio.to_thread(hostcreds.revoke, settings, args.names)
            print("revoked" if revoked else "no such broker user")
            return 0
        env = await hostcreds.issue(
            settings, args.names, make_broker_user=args.broker_user, control_url=args.control_url
        )
    except hostcreds.CredentialsError as exc:
        print(f"actorstack: {exc}", file=sys.stderr)
        return 2
    for key, value in env.items():
        print(f"{key}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    settings = Settings.from_env(
        database_url=args.database_url, amqp_url=args.amqp_url, state_dir=args.state_dir
    )
    commands = {
        "up": _up,
        "runtime": _runtime,
        "api": _api,
        "hostagent": _hostagent,
        "bootstrap": _bootstrap,
        "openrc": _openrc,
        "testimage": _testimage,
        "events": _events,
        "doctor": _doctor,
        "host": _host,
    }
    coro = _db_init(settings) if args.command == "db" else commands[args.command](settings, args)
    try:
        return asyncio.run(coro)
    except (
        ServiceUnreachable,
        roles.NotInitialised,
        roles.CannotListen,
        roles.NoHostToken,
        roles.NoControlUrl,
        VirtError,
        testimage.BuildError,
    ) as exc:
        print(f"actorstack: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
