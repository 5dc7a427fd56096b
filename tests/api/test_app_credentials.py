"""Keystone application credentials: their API, authenticating with one, and the real `openstack`
CLI and keystoneauth's v3applicationcredential plugin against them."""

from __future__ import annotations

import datetime
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.api.conftest import OPENSTACK, CliError, Cloud, Credentials
from tests.conftest import PG_SERVER, RUN_PREFIX

AUTH = "/identity/v3/auth/tokens"


def _creds_path(user_id: str, app_cred_id: str = "") -> str:
    path = f"/identity/v3/users/{user_id}/application_credentials"
    return f"{path}/{app_cred_id}" if app_cred_id else path


async def _delete_owner(cloud: Cloud, who: Credentials) -> None:
    token = await cloud.token()
    await cloud.request("DELETE", f"/identity/v3/users/{who.user_id}", token=token)
    await cloud.request("DELETE", f"/identity/v3/projects/{who.project_id}", token=token)


@pytest.fixture
async def owner(cloud: Cloud) -> AsyncIterator[Credentials]:
    """A member of a fresh project; deleting the user afterwards takes their credentials along."""
    who = await cloud.new_member("ac")
    try:
        yield who
    finally:
        await _delete_owner(cloud, who)


async def _create(
    cloud: Cloud, who: Credentials, *, token: str | None = None, **fields: Any
) -> tuple[int, Any]:
    body = {"application_credential": {"name": f"ac-{uuid.uuid4().hex[:8]}", **fields}}
    status, data, _ = await cloud.request("POST", _creds_path(who.user_id), who=who, token=token, json=body)
    return status, data


async def _created(cloud: Cloud, who: Credentials, **fields: Any) -> dict[str, Any]:
    status, data = await _create(cloud, who, **fields)
    assert status == 201, data
    return data["application_credential"]


async def _auth(
    cloud: Cloud, app_cred: dict[str, Any], *, scope: Any = None
) -> tuple[int, Any, dict[str, str]]:
    identity = {"methods": ["application_credential"], "application_credential": app_cred}
    auth: dict[str, Any] = {"identity": identity}
    if scope is not None:
        auth["scope"] = scope
    return await cloud.request("POST", AUTH, who=False, json={"auth": auth})


async def _token_from(cloud: Cloud, app_cred: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    status, data, headers = await _auth(cloud, {"id": app_cred["id"], "secret": app_cred["secret"]})
    assert status == 201, data
    return headers["X-Subject-Token"], data["token"]


async def _names(cloud: Cloud, who: Credentials) -> list[str]:
    status, data, _ = await cloud.request("GET", _creds_path(who.user_id), who=who)
    assert status == 200, data
    return [c["name"] for c in data["application_credentials"]]


async def _role_id(cloud: Cloud, name: str) -> str:
    _, data, _ = await cloud.request("GET", f"/identity/v3/roles?name={name}")
    return data["roles"][0]["id"]


async def test_create_list_show_and_delete_through_the_api(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner, description="for the monitoring job")
    assert created["secret"] and len(created["secret"]) >= 64
    assert created["project_id"] == owner.project_id and created["unrestricted"] is False
    assert created["expires_at"] is None and created["access_rules"] == []
    assert sorted(r["name"] for r in created["roles"]) == ["member", "reader"]  # the token's roles
    assert all(r["domain_id"] is None for r in created["roles"])
    assert created["links"]["self"].endswith(_creds_path(owner.user_id, created["id"]))

    status, listed, _ = await cloud.request("GET", _creds_path(owner.user_id), who=owner)
    assert status == 200 and [c["id"] for c in listed["application_credentials"]] == [created["id"]]
    assert "secret" not in listed["application_credentials"][0]
    status, filtered, _ = await cloud.request("GET", _creds_path(owner.user_id) + "?name=nope", who=owner)
    assert status == 200 and filtered["application_credentials"] == []

    status, shown, _ = await cloud.request("GET", _creds_path(owner.user_id, created["id"]), who=owner)
    assert status == 200, shown
    shown = shown["application_credential"]
    assert "secret" not in shown and shown["user_id"] == owner.user_id
    assert shown["description"] == "for the monitoring job" and shown["roles"] == created["roles"]

    status, _, _ = await cloud.request("DELETE", _creds_path(owner.user_id, created["id"]), who=owner)
    assert status == 204
    status, data, _ = await cloud.request("GET", _creds_path(owner.user_id, created["id"]), who=owner)
    assert status == 404 and data["error"]["code"] == 404
    status, _, _ = await cloud.request("DELETE", _creds_path(owner.user_id, created["id"]), who=owner)
    assert status == 404


async def test_the_secret_is_kept_only_as_a_hash(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner, secret="my-own-secret-1")
    assert created["secret"] == "my-own-secret-1"
    conn = await asyncpg.connect(f"{PG_SERVER}/{RUN_PREFIX}")
    try:
        stored = await conn.fetchval(
            "SELECT secret_hash FROM application_credentials WHERE id = $1", created["id"]
        )
    finally:
        await conn.close()
    assert stored.startswith("scrypt$") and "my-own-secret-1" not in stored
    _, token = await _token_from(cloud, created)
    assert token["application_credential"]["id"] == created["id"]


async def test_a_credential_token_has_the_credentials_project_and_roles_only(
    cloud: Cloud, owner: Credentials
) -> None:
    created = await _created(cloud, owner, roles=[{"name": "reader"}])
    assert [r["name"] for r in created["roles"]] == ["reader"]
    token, body = await _token_from(cloud, created)
    assert body["methods"] == ["application_credential"]
    assert body["project"]["id"] == owner.project_id and body["user"]["id"] == owner.user_id
    assert [r["name"] for r in body["roles"]] == ["reader"]
    assert body["application_credential"] == {
        "id": created["id"],
        "name": created["name"],
        "restricted": True,
    }
    assert any(s["type"] == "compute" for s in body["catalog"])

    status, servers, _ = await cloud.request("GET", "/compute/v2.1/servers", token=token)
    assert status == 200 and servers == {"servers": []}
    status, _, _ = await cloud.request(
        "POST", "/compute/v2.1/os-keypairs", token=token, json={"keypair": {"name": "not-for-readers"}}
    )
    assert status == 403  # the user is a member, the credential only a reader
    status, validated, _ = await cloud.request("GET", AUTH, token=token, headers={"X-Subject-Token": token})
    assert status == 200 and validated["token"]["application_credential"]["id"] == created["id"]


async def test_authenticating_by_name_with_the_user_by_id_or_by_name(
    cloud: Cloud, owner: Credentials
) -> None:
    created = await _created(cloud, owner)
    for user in (
        {"id": owner.user_id},
        {"name": owner.user, "domain": {"id": "default"}},
        {"name": owner.user, "domain": {"name": "Default"}},
    ):
        ref = {"name": created["name"], "user": user, "secret": created["secret"]}
        status, data, _ = await _auth(cloud, ref)
        assert status == 201, (user, data)
        assert data["token"]["application_credential"]["id"] == created["id"]
    status, data, _ = await _auth(
        cloud, {"name": created["name"], "user": {"id": uuid.uuid4().hex}, "secret": created["secret"]}
    )
    assert status == 401, data


async def test_wrong_secret_unknown_credential_and_a_scope_are_refused(
    cloud: Cloud, owner: Credentials
) -> None:
    created = await _created(cloud, owner)
    for ref in (
        {"id": created["id"], "secret": created["secret"] + "x"},
        {"id": uuid.uuid4().hex, "secret": created["secret"]},
        {"name": "no-such-credential", "user": {"id": owner.user_id}, "secret": created["secret"]},
    ):
        status, data, _ = await _auth(cloud, ref)
        assert status == 401, (ref, data)
        assert data["error"] == {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    status, data, _ = await _auth(
        cloud, {"id": created["id"], "secret": created["secret"]}, scope={"project": {"id": owner.project_id}}
    )
    assert status == 401
    assert data["error"]["message"] == (
        "Error authenticating with application credential: Application credentials cannot request a scope."
    )
    status, data, _ = await _auth(cloud, {"id": created["id"]})
    assert status == 400, data


async def test_an_expired_credential_is_refused_and_caps_its_tokens(cloud: Cloud, owner: Credentials) -> None:
    soon = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(minutes=10)
    created = await _created(cloud, owner, expires_at=soon.strftime("%Y-%m-%dT%H:%M:%S"))
    # Keystone's JSON encoder writes the credential's datetime with microseconds and no zone
    # suffix (tempest compares it with isoformat()); a token's expiry has the Z.
    assert created["expires_at"] == soon.strftime("%Y-%m-%dT%H:%M:%S.000000")
    _, token = await _token_from(cloud, created)
    assert token["expires_at"] == created["expires_at"] + "Z"  # the credential's expiry, not the token TTL

    conn = await asyncpg.connect(f"{PG_SERVER}/{RUN_PREFIX}")
    try:
        await conn.execute(
            "UPDATE application_credentials SET expires_at = now() - interval '1 second' WHERE id = $1",
            created["id"],
        )
    finally:
        await conn.close()
    status, data, _ = await _auth(cloud, {"id": created["id"], "secret": created["secret"]})
    assert status == 401 and data["error"]["code"] == 401


async def test_deleting_a_credential_ends_the_tokens_made_from_it(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner)
    token, _ = await _token_from(cloud, created)
    password_token = await cloud.token(owner)
    status, _, _ = await cloud.request("GET", "/compute/v2.1/servers", token=token)
    assert status == 200
    status, _, _ = await cloud.request(
        "DELETE", _creds_path(owner.user_id, created["id"]), token=password_token
    )
    assert status == 204
    status, data, _ = await cloud.request("GET", "/compute/v2.1/servers", token=token)
    assert status == 401, data
    status, _, _ = await _auth(cloud, {"id": created["id"], "secret": created["secret"]})
    assert status == 401
    status, _, _ = await cloud.request("GET", "/compute/v2.1/servers", token=password_token)
    assert status == 200  # the user's other tokens are untouched


async def test_losing_the_delegated_roles_ends_authentication(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner, roles=[{"name": "member"}])
    await _token_from(cloud, created)
    member = await _role_id(cloud, "member")
    status, _, _ = await cloud.request(
        "DELETE", f"/identity/v3/projects/{owner.project_id}/users/{owner.user_id}/roles/{member}"
    )
    assert status == 204
    status, data, _ = await _auth(cloud, {"id": created["id"], "secret": created["secret"]})
    assert status == 401 and "has no access" in data["error"]["message"]


async def test_a_restricted_credential_cannot_manage_credentials(cloud: Cloud, owner: Credentials) -> None:
    restricted = await _created(cloud, owner)
    token, _ = await _token_from(cloud, restricted)
    status, data = await _create(cloud, owner, token=token)
    assert status == 403 and "application_credential" in data["error"]["message"], data
    status, _, _ = await cloud.request("DELETE", _creds_path(owner.user_id, restricted["id"]), token=token)
    assert status == 403
    status, _, _ = await cloud.request("GET", _creds_path(owner.user_id), token=token)
    assert status == 200  # reading is allowed

    unrestricted = await _created(cloud, owner, unrestricted=True)
    token, body = await _token_from(cloud, unrestricted)
    assert body["application_credential"]["restricted"] is False
    status, data = await _create(cloud, owner, token=token)
    assert status == 201, data
    status, _, _ = await cloud.request("DELETE", _creds_path(owner.user_id, restricted["id"]), token=token)
    assert status == 204


async def test_a_credential_token_stays_bound_to_it_when_rescoped(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner, roles=[{"name": "reader"}])
    token, _ = await _token_from(cloud, created)
    rescope = {"identity": {"methods": ["token"], "token": {"id": token}}}
    status, data, _ = await cloud.request("POST", AUTH, who=False, json={"auth": rescope})
    assert status == 201, data
    assert [r["name"] for r in data["token"]["roles"]] == ["reader"]
    assert data["token"]["application_credential"]["id"] == created["id"]
    admin_project = {"project": {"name": "admin", "domain": {"id": "default"}}}
    status, data, _ = await cloud.request(
        "POST", AUTH, who=False, json={"auth": {**rescope, "scope": admin_project}}
    )
    assert status in (401, 403), data


async def test_other_users_credentials_are_out_of_reach(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner)
    other = await cloud.new_member("ac-other")
    try:
        mine = _creds_path(owner.user_id, created["id"])
        for method, path in (("GET", _creds_path(owner.user_id)), ("GET", mine), ("DELETE", mine)):
            status, data, _ = await cloud.request(method, path, who=other)
            assert status == 403, (method, path, data)
        status, _, _ = await cloud.request("GET", _creds_path(other.user_id, created["id"]), who=other)
        assert status == 404  # not under the other user's path
        status, data = await _create(cloud, owner, token=await cloud.token(other))
        assert status == 403, data
        status, data = await _create(cloud, owner, token=await cloud.token())  # not even the admin
        assert status == 403, data
        status, data, _ = await cloud.request("GET", _creds_path(owner.user_id, created["id"]))
        assert status == 200 and data["application_credential"]["id"] == created["id"]  # an admin may look
    finally:
        await _delete_owner(cloud, other)
    assert await _names(cloud, owner) == [created["name"]]


async def test_bad_requests_change_nothing(cloud: Cloud, owner: Credentials) -> None:
    created = await _created(cloud, owner)
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).isoformat()
    for fields, expected in (
        ({"name": None}, 400),
        ({"name": "   "}, 400),
        ({"name": created["name"]}, 409),
        ({"roles": [{"name": "admin"}]}, 400),  # a role the user does not hold
        ({"roles": [{"id": uuid.uuid4().hex}]}, 400),
        ({"roles": [{"name": "no-such-role"}]}, 404),
        ({"roles": [{"id": "x", "name": "member"}]}, 400),
        ({"roles": "member"}, 400),
        ({"expires_at": "next tuesday"}, 400),
        ({"expires_at": past}, 400),
        ({"unrestricted": "yes"}, 400),
        ({"access_rules": [{"service": "compute", "path": "/servers", "method": "FETCH"}]}, 400),
        ({"access_rules": [{"service": "compute", "path": "servers", "method": "GET"}]}, 400),
    ):
        status, data = await _create(cloud, owner, **fields)
        assert status == expected, (fields, data)
        assert data["error"]["code"] == expected
    status, data, _ = await cloud.request("POST", _creds_path(owner.user_id), who=owner, json={"name": "x"})
    assert status == 400, data
    assert await _names(cloud, owner) == [created["name"]]


async def test_deleting_the_user_deletes_their_credentials(cloud: Cloud) -> None:
    who = await cloud.new_member("ac-gone")
    created = await _created(cloud, who)
    await _delete_owner(cloud, who)
    conn = await asyncpg.connect(f"{PG_SERVER}/{RUN_PREFIX}")
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM application_credentials WHERE user_id = $1", who.user_id
        )
    finally:
        await conn.close()
    assert left == 0
    status, _, _ = await _auth(cloud, {"id": created["id"], "secret": created["secret"]})
    assert status == 401


def _app_cred_cli(cloud: Cloud, app_cred_id: str, secret: str, *args: str) -> Any:
    """The real CLI authenticated by keystoneauth's v3applicationcredential plugin only."""
    env = {
        k: v
        for k, v in cloud.env().items()
        if k
        not in (
            "OS_USERNAME",
            "OS_PASSWORD",
            "OS_PROJECT_NAME",
            "OS_USER_DOMAIN_NAME",
            "OS_PROJECT_DOMAIN_NAME",
        )
    }
    argv = [
        OPENSTACK,
        "--os-auth-type",
        "v3applicationcredential",
        "--os-application-credential-id",
        app_cred_id,
        "--os-application-credential-secret",
        secret,
        *args,
        "-f",
        "json",
    ]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise CliError(argv[1:], result)
    return json.loads(result.stdout)


async def test_the_openstack_cli_creates_uses_and_deletes_a_credential(
    cloud: Cloud, owner: Credentials
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    expiration = tomorrow.strftime("%Y-%m-%dT%H:%M:%S")
    created = cloud.openstack(
        "application",
        "credential",
        "create",
        "--role",
        "member",
        "--expiration",
        expiration,
        "--description",
        "made by the CLI",
        name,
        who=owner,
    )
    assert created["Name"] == name and created["Secret"] and created["Project ID"] == owner.project_id
    assert created["Expires At"].startswith(expiration)
    shown = cloud.openstack("application", "credential", "show", name, who=owner)
    assert shown["ID"] == created["ID"] and [r["name"] for r in shown["Roles"]] == ["member"]
    assert "Secret" not in shown
    listed = cloud.openstack("application", "credential", "list", who=owner)
    assert [c["Name"] for c in listed] == [name]

    token = _app_cred_cli(cloud, created["ID"], created["Secret"], "token", "issue")
    assert token["project_id"] == owner.project_id and token["user_id"] == owner.user_id
    assert _app_cred_cli(cloud, created["ID"], created["Secret"], "server", "list") == []

    cloud.openstack("application", "credential", "delete", name, who=owner, fmt=None)
    assert cloud.openstack("application", "credential", "list", who=owner) == []
    with pytest.raises(CliError) as refused:
        _app_cred_cli(cloud, created["ID"], created["Secret"], "server", "list")
    assert "401" in refused.value.stderr or "authentication" in refused.value.stderr.lower()
