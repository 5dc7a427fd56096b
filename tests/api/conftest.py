"""A running cloud for API tests: `actorstack up` as a subprocess on the run's database and
vhost, listening on a free loopback port (actorstack/scratch.py), and the real `openstack` CLI
pointed at it."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actorstack.scratch import ScratchCloud, ScratchServices
from tests.cli_forkserver import ForkServer
from tests.conftest import RUN_PREFIX

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
    scratch: ScratchCloud  # its processes (more can be started beside `up`)

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
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}  # Glance's errors as JSON
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


@contextlib.asynccontextmanager
async def running_cloud(
    services: ScratchServices, state_dir: Path, *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Cloud]:
    """`actorstack up ARGS` on these services with this state directory (and `env` added to its
    environment), ready: the API answers, its hosts (and storage agent, unless --storage none)
    are up. Stopped when the block ends (SIGTERM, and a kill if it does not stop); should it die
    under the tests, the end of its log is printed before its directory goes."""
    async with services.cloud(state_dir, env=env) as scratch:
        up = await scratch.up(*args)
        yield Cloud(
            scratch.url, Credentials("admin", scratch.password, "admin"), state_dir, up.log_path, scratch
        )


@pytest.fixture(scope="session")
async def cloud(services: ScratchServices, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cloud]:
    state_dir = tmp_path_factory.mktemp(f"{RUN_PREFIX}-state")
    async with running_cloud(
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
