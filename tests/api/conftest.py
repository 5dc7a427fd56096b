"""A running cloud for API tests: `actorstack up` as a subprocess on the run's database and
vhost, listening on a free loopback port, and the real `openstack` CLI pointed at it."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cli_forkserver import ForkServer
from tests.conftest import ROOT, RUN_PREFIX, Services

OPENSTACK = str(Path(sys.executable).parent / "openstack")


_FORK_SERVER: ForkServer | None = None


def run_cli(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`openstack ARGV`: through the fork server (tests/cli_forkserver.py, the same CLI code with
    its imports paid once), or as the executable with ACTORSTACK_TEST_CLI=subprocess."""
    global _FORK_SERVER
    if os.environ.get("ACTORSTACK_TEST_CLI") == "subprocess":
        return subprocess.run([OPENSTACK, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    if _FORK_SERVER is None:
        _FORK_SERVER = ForkServer()
        atexit.register(_FORK_SERVER.close)
    return _FORK_SERVER.run(argv, env, timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CliError(AssertionError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        self.returncode, self.stdout, self.stderr = result.returncode, result.stdout, result.stderr
        super().__init__(
            f"openstack {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
        )


@dataclasses.dataclass
class Credentials:
    user: str
    password: str
    project: str
    user_id: str = ""
    project_id: str = ""


@dataclasses.dataclass
class Cloud:
    url: str
    admin: Credentials
    state_dir: Path
    log_path: Path

    def env(self, who: Credentials | None = None) -> dict[str, str]:
        who = who or self.admin
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(
            OS_AUTH_URL=f"{self.url}/identity/v3",
            OS_IDENTITY_API_VERSION="3",
            OS_USERNAME=who.user,
            OS_PASSWORD=who.password,
            OS_PROJECT_NAME=who.project,
            OS_USER_DOMAIN_NAME="Default",
            OS_PROJECT_DOMAIN_NAME="Default",
            OS_REGION_NAME="RegionOne",
        )
        return env

    def openstack(
        self, *args: str, who: Credentials | None = None, fmt: str | None = "json", timeout: float = 120
    ) -> Any:
        """Run the real `openstack` CLI; parsed JSON output (or text with fmt=None)."""
        argv = [*args, "-f", fmt] if fmt else list(args)
        result = run_cli(argv, self.env(who), timeout)
        if result.returncode != 0:
            raise CliError(argv, result)
        if fmt == "json":
            return json.loads(result.stdout) if result.stdout.strip() else None
        return result.stdout

    def openstack_fails(self, *args: str, who: Credentials | None = None) -> CliError:
        """Run a command that must fail; returns the error (exit code and output)."""
        try:
            self.openstack(*args, who=who, fmt=None)
        except CliError as exc:
            return exc
        raise AssertionError(f"openstack {' '.join(args)} succeeded but should have failed")

    async def token(self, who: Credentials | None = None) -> str:
        who = who or self.admin
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": who.user, "domain": {"id": "default"}, "password": who.password}
                    },
                },
                "scope": {"project": {"name": who.project, "domain": {"id": "default"}}},
            }
        }
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{self.url}/identity/v3/auth/tokens", json=body) as r,
        ):
            assert r.status == 201, await r.text()
            return r.headers["X-Subject-Token"]

    async def request(
        self,
        method: str,
        path: str,
        *,
        who: Credentials | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        """A raw request: (status, parsed JSON or text, headers)."""
        headers = dict(kwargs.pop("headers", {}))
        if token is None and who is not False:
            token = await self.token(who)
        if token:
            headers["X-Auth-Token"] = token
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, headers=headers, **kwargs) as r,
        ):
            text = await r.text()
            try:
                data: Any = json.loads(text) if text else None
            except ValueError:
                data = text
            return r.status, data, dict(r.headers)

    async def new_member(self, label: str = "p", role: str = "member") -> Credentials:
        """A fresh project with a user holding `role` on it (created through the API as admin)."""
        suffix = uuid.uuid4().hex[:8]
        who = Credentials(f"{label}-user-{suffix}", secrets.token_urlsafe(12), f"{label}-{suffix}")
        token = await self.token()
        status, project, _ = await self.request(
            "POST", "/identity/v3/projects", token=token, json={"project": {"name": who.project}}
        )
        assert status == 201, project
        status, user, _ = await self.request(
            "POST",
            "/identity/v3/users",
            token=token,
            json={
                "user": {
                    "name": who.user,
                    "password": who.password,
                    "default_project_id": project["project"]["id"],
                }
            },
        )
        assert status == 201, user
        status, roles, _ = await self.request("GET", f"/identity/v3/roles?name={role}", token=token)
        role_id = roles["roles"][0]["id"]
        status, _, _ = await self.request(
            "PUT",
            f"/identity/v3/projects/{project['project']['id']}/users/{user['user']['id']}/roles/{role_id}",
            token=token,
        )
        assert status == 204
        who.user_id, who.project_id = user["user"]["id"], project["project"]["id"]
        return who


@contextlib.contextmanager
def running_cloud(services: Services, state_dir: Path, *args: str) -> Iterator[Cloud]:
    """`actorstack up ARGS` on the run's database and vhost with this state directory, until the
    block ends (then SIGTERM, and a kill if it does not stop)."""
    port = free_port()
    log_path = state_dir / "up.log"
    password = secrets.token_urlsafe(12)
    env = services.env(ACTORSTACK_STATE_DIR=str(state_dir), ACTORSTACK_ADMIN_PASSWORD=password)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actorstack.cli",
                "up",
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"actorstack up did not start:\n{log_path.read_text()[-5000:]}"
                    ) from None
                time.sleep(0.1)
        cloud = Cloud(url, Credentials("admin", password, "admin"), state_dir, log_path)
        _wait_for_hosts(cloud, args, proc, deadline=time.monotonic() + 60)
        yield cloud
    finally:
        if proc.poll() is not None:  # it died under the tests: say how, before its directory goes
            print(
                f"actorstack up exited with {proc.returncode} during the tests; its log ends:\n"
                f"{log_path.read_text(errors='replace')[-6000:]}",
                file=sys.stderr,
            )
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_hosts(
    cloud: Cloud, args: tuple[str, ...], proc: subprocess.Popen[bytes], deadline: float
) -> None:
    """Until the compute hosts `up` runs (and its storage agent, unless --storage none) report
    up: the API listens before the host agents have registered, and a server created in between
    would find no valid host."""
    hosts = int(args[args.index("--hosts") + 1]) if "--hosts" in args else 1
    storage = "--storage" not in args or args[args.index("--storage") + 1] != "none"
    body = json.dumps(
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"id": "default"},
                            "password": cloud.admin.password,
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
    ).encode()
    while True:
        try:
            request = urllib.request.Request(
                f"{cloud.url}/identity/v3/auth/tokens",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                token = answer.headers["X-Subject-Token"]
                project = json.load(answer)["token"]["project"]["id"]
            up = _count_up(cloud, token, "/compute/v2.1/os-hypervisors/detail", "hypervisors") >= hosts
            if up and storage:
                up = (
                    _count_up(
                        cloud, token, f"/volume/v3/{project}/os-services?binary=cinder-volume", "services"
                    )
                    > 0
                )
            if up:
                return
        except (OSError, ValueError, KeyError):
            pass  # still starting
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"actorstack up: its hosts did not come up:\n{cloud.log_path.read_text()[-5000:]}"
            )
        time.sleep(0.2)


def _count_up(cloud: Cloud, token: str, path: str, key: str) -> int:
    request = urllib.request.Request(cloud.url + path, headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return sum(1 for item in json.load(answer)[key] if item.get("state") == "up")


@pytest.fixture(scope="session")
def cloud(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    state_dir = tmp_path_factory.mktemp(f"{RUN_PREFIX}-state")
    with running_cloud(
        services, state_dir, "--hosts", "3", "--virt", "test", "--host-heartbeat", "1", "--sync-interval", "2"
    ) as running:
        yield running
    # Every test deletes the volumes it made: a file left is a volume (or a delete) lost.
    left = sorted(p.name for p in (state_dir / "volumes").glob("volume-*"))
    for path in (state_dir / "volumes").glob("volume-*"):
        path.unlink()
    assert not left, f"volume files left after the API tests: {left}"


@pytest.fixture(scope="module")
def image(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A public 1 MiB raw image for the module's servers (the test driver never reads it)."""
    path = tmp_path_factory.mktemp("img") / "tiny.raw"
    path.write_bytes(b"\0" * (1024 * 1024))
    created = cloud.openstack(
        "image",
        "create",
        "--file",
        str(path),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--public",
        f"img-{uuid.uuid4().hex[:8]}",
    )
    return created["id"]


@pytest.fixture
async def member(cloud: Cloud) -> AsyncIterator[Credentials]:
    yield await cloud.new_member()
