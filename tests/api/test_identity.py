"""Identity v3 through the real `openstack` CLI, and the refusals a client must get."""

from __future__ import annotations

import base64
import json
import time
import uuid

import asyncpg

from api.auth import TokenCodec
from tests.api.conftest import Cloud, Credentials
from tests.conftest import PG_SERVER, RUN_PREFIX


def test_token_issue_gives_a_project_scoped_token(cloud: Cloud) -> None:
    token = cloud.openstack("token", "issue")
    assert token["id"].startswith("as1.") and token["project_id"] and token["user_id"]


def test_project_user_and_role_lifecycle_through_the_cli(cloud: Cloud) -> None:
    name = f"proj-{uuid.uuid4().hex[:8]}"
    project = cloud.openstack("project", "create", "--description", "made by a test", name)
    assert project["name"] == name and project["domain_id"] == "default"
    user = cloud.openstack("user", "create", "--password", "s3cret!", "--project", name, f"{name}-user")
    assert user["default_project_id"] == project["id"]
    cloud.openstack("role", "add", "--user", f"{name}-user", "--project", name, "member", fmt=None)
    assignments = cloud.openstack("role", "assignment", "list", "--project", name, "--names")
    assert [(a["Role"], a["User"]) for a in assignments] == [("member", f"{name}-user@Default")]

    who = Credentials(f"{name}-user", "s3cret!", name)
    token = cloud.openstack("token", "issue", who=who)
    assert token["project_id"] == project["id"]

    cloud.openstack("role", "remove", "--user", f"{name}-user", "--project", name, "member", fmt=None)
    err = cloud.openstack_fails("token", "issue", who=who)
    assert "401" in err.stderr or "has no access" in err.stderr
    cloud.openstack("user", "delete", f"{name}-user", fmt=None)
    cloud.openstack("project", "delete", name, fmt=None)
    assert name not in {p["Name"] for p in cloud.openstack("project", "list")}


def test_wrong_password_is_refused(cloud: Cloud) -> None:
    err = cloud.openstack_fails("token", "issue", who=Credentials("admin", "not-the-password", "admin"))
    assert "401" in err.stderr


async def test_tampered_token_is_refused(cloud: Cloud) -> None:
    token = await cloud.token()
    prefix, body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["roles"] = [["x", "admin"]]
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    for forged in (f"{prefix}.{forged_body}.{mac}", token[:-2] + "AA", "garbage", ""):
        status, data, _ = await cloud.request("GET", "/identity/v3/projects", token=forged or None, who=False)
        assert status == 401, (forged, data)
        assert data["error"]["code"] == 401


async def test_expired_token_is_refused(cloud: Cloud) -> None:
    """A genuine token (signed with the cloud's key) whose expiry has passed."""
    conn = await asyncpg.connect(f"{PG_SERVER}/{RUN_PREFIX}")
    try:
        key = json.loads(
            await conn.fetchval("SELECT value::text FROM cluster_settings WHERE key = 'token_key'")
        )
        admin = await conn.fetchrow(
            "SELECT u.id, u.name, p.id AS pid FROM users u JOIN projects p ON p.name = 'admin' "
            "WHERE u.name = 'admin'"
        )
    finally:
        await conn.close()
    codec = TokenCodec(key, ttl=1)
    token, _ = codec.issue(
        user_id=admin["id"],
        user_name="admin",
        user_domain_id="default",
        project_id=admin["pid"],
        project_name="admin",
        project_domain_id="default",
        roles=(("x", "admin"),),
        methods=("password",),
        expires_at=time.time() - 1,
    )
    status, data, _ = await cloud.request("GET", "/identity/v3/projects", token=token, who=False)
    assert status == 401 and "expired" in data["error"]["message"]


async def test_revoked_token_is_refused(cloud: Cloud) -> None:
    token = await cloud.token()
    status, _, _ = await cloud.request(
        "DELETE", "/identity/v3/auth/tokens", token=token, headers={"X-Subject-Token": token}
    )
    assert status == 204
    status, _, _ = await cloud.request("GET", "/identity/v3/auth/projects", token=token)
    assert status == 401


async def test_malformed_json_and_huge_bodies_are_refused_cleanly(cloud: Cloud) -> None:
    status, data, headers = await cloud.request(
        "POST",
        "/identity/v3/auth/tokens",
        who=False,
        data=b'{"auth": ',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and data["error"]["code"] == 400 and "Traceback" not in json.dumps(data)
    assert headers["x-openstack-request-id"].startswith("req-")
    status, data, _ = await cloud.request(
        "POST",
        "/identity/v3/projects",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert status == 413


async def test_members_cannot_administer_identity(cloud: Cloud, member: Credentials) -> None:
    for method, path, body in (
        ("GET", "/identity/v3/projects", None),
        ("POST", "/identity/v3/projects", {"project": {"name": "sneaky"}}),
        ("POST", "/identity/v3/users", {"user": {"name": "sneaky"}}),
        ("GET", "/identity/v3/users", None),
    ):
        status, data, _ = await cloud.request(method, path, who=member, json=body)
        assert status == 403, (method, path, data)
    status, data, _ = await cloud.request("GET", f"/identity/v3/users/{member.user_id}/projects", who=member)
    assert status == 200 and [p["id"] for p in data["projects"]] == [member.project_id]


async def test_every_response_has_a_request_id(cloud: Cloud) -> None:
    for path in ("/identity", "/identity/v3", "/compute/v2.1", "/image", "/nowhere"):
        status, _, headers = await cloud.request("GET", path, who=False)
        assert headers["x-openstack-request-id"].startswith("req-"), (path, status)
