"""Keystone's credentials (/credentials and OS-EC2), trusts and trust-scoped tokens, access rules
of application credentials (enforced on every call), OAuth1 consumers and domain configuration."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import asyncpg

from tests.api.conftest import Cloud, Credentials
from tests.api.test_identity_grants import _admin, _auth, _name, _role, _user


async def test_ec2_credentials_through_the_cli(cloud: Cloud, member: Credentials) -> None:
    created = cloud.openstack("ec2", "credentials", "create", who=member)
    assert created["project_id"] == member.project_id and created["user_id"] == member.user_id
    listed = cloud.openstack("ec2", "credentials", "list", who=member)
    assert [c["Access"] for c in listed] == [created["access"]]
    shown = cloud.openstack("ec2", "credentials", "show", created["access"], who=member)
    assert shown["secret"] == created["secret"]
    # It is a credential of type ec2 whose id is the sha256 of its access key.
    status, body, _ = await cloud.request("GET", "/identity/v3/credentials?type=ec2", who=member)
    assert status == 200 and len(body["credentials"]) == 1
    assert json.loads(body["credentials"][0]["blob"])["access"] == created["access"]
    cloud.openstack("ec2", "credentials", "delete", created["access"], who=member, fmt=None)
    assert cloud.openstack("ec2", "credentials", "list", who=member) == []


async def test_credential_blobs_are_kept_encrypted_and_owned(cloud: Cloud, pool: asyncpg.Pool) -> None:
    admin = await _admin(cloud)
    owner, stranger = await cloud.new_member(), await cloud.new_member()
    body = {"credential": {"user_id": owner.user_id, "type": "totp", "blob": "secret-seed-1234"}}
    status, created, _ = await cloud.request("POST", "/identity/v3/credentials", who=owner, json=body)
    assert status == 201, created
    credential = created["credential"]
    stored = await pool.fetchval("SELECT encrypted_blob FROM credentials WHERE id = $1", credential["id"])
    assert "secret-seed-1234" not in stored
    assert (await cloud.request("GET", f"/identity/v3/credentials/{credential['id']}", who=stranger))[
        0
    ] == 403
    status, theirs, _ = await cloud.request("GET", "/identity/v3/credentials", who=stranger)
    assert status == 200 and credential["id"] not in {c["id"] for c in theirs["credentials"]}
    body = {"credential": {"user_id": owner.user_id, "type": "totp", "blob": "x"}}
    assert (await cloud.request("POST", "/identity/v3/credentials", who=stranger, json=body))[0] == 403
    changed = await admin(
        "PATCH", f"/credentials/{credential['id']}", 200, json={"credential": {"blob": "new"}}
    )
    assert changed["credential"]["blob"] == "new"
    ec2 = {"user_id": owner.user_id, "type": "ec2", "blob": json.dumps({"access": "a", "secret": "s"})}
    await admin("POST", "/credentials", 400, json={"credential": ec2})  # an ec2 credential needs a project
    await admin(
        "POST", "/credentials", 400, json={"credential": {**ec2, "project_id": owner.project_id, "blob": "x"}}
    )
    await admin("DELETE", f"/credentials/{credential['id']}", 204)
    await admin("GET", f"/credentials/{credential['id']}", 404)


async def _trust(cloud: Cloud, trustor: Any, password: str, body: dict[str, Any]) -> tuple[int, Any]:
    _, _, token = await _auth(cloud, trustor["id"], password, {"project": {"id": body["project_id"]}})
    status, data, _ = await cloud.request(
        "POST", "/identity/v3/OS-TRUST/trusts", token=token, json={"trust": body}
    )
    return status, data


async def test_trusts_and_trust_scoped_tokens(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"))
    trustor, trustor_password = await _user(admin)
    trustee, trustee_password = await _user(admin)
    delegated, kept = await _role(admin), await _role(admin)
    for role in (delegated, kept):
        await admin("PUT", f"/projects/{project['id']}/users/{trustor['id']}/roles/{role['id']}", 204)
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).replace(microsecond=0)
    body = {
        "trustor_user_id": trustor["id"],
        "trustee_user_id": trustee["id"],
        "project_id": project["id"],
        "impersonation": True,
        "roles": [{"name": delegated["name"]}],
        "expires_at": soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    status, created = await _trust(cloud, trustor, trustor_password, body)
    assert status == 201, created
    trust = created["trust"]
    assert trust["expires_at"] == soon.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert [r["id"] for r in trust["roles"]] == [delegated["id"]]
    # Only the trustor makes a trust of theirs; a role they do not hold cannot be delegated.
    assert (await _trust(cloud, trustee, trustee_password, {**body, "project_id": project["id"]}))[0] in (
        401,
        403,
    )
    other = await _role(admin)
    assert (await _trust(cloud, trustor, trustor_password, {**body, "roles": [{"id": other["id"]}]}))[
        0
    ] == 403
    assert (await _trust(cloud, trustor, trustor_password, {**body, "expires_at": "bad.123Z"}))[0] == 400
    # The trustee's trust-scoped token acts as the trustor, with the delegated role only.
    scope = {"OS-TRUST:trust": {"id": trust["id"]}}
    status, token_body, token = await _auth(cloud, trustee["id"], trustee_password, scope)
    assert status == 201, token_body
    assert token_body["token"]["user"]["id"] == trustor["id"]
    assert token_body["token"]["OS-TRUST:trust"]["trustee_user"] == {"id": trustee["id"]}
    assert [r["id"] for r in token_body["token"]["roles"]] == [delegated["id"]]
    assert (await _auth(cloud, trustor["id"], trustor_password, scope))[0] == 403  # not the trustee
    # Used, it still holds the delegated role only (not the trustor's other one).
    status, validated, _ = await cloud.request(
        "GET", "/identity/v3/auth/tokens", token=token, headers={"X-Subject-Token": token}
    )
    assert status == 200 and [r["id"] for r in validated["token"]["roles"]] == [delegated["id"]]
    status, roles, _ = await cloud.request(
        "HEAD", f"/identity/v3/OS-TRUST/trusts/{trust['id']}/roles/{delegated['id']}", token=token
    )
    assert status == 200
    # Deleting the trust ends its tokens.
    await admin("DELETE", f"/OS-TRUST/trusts/{trust['id']}", 204)
    assert (await cloud.request("GET", "/identity/v3/auth/catalog", token=token))[0] == 401
    await admin("GET", f"/OS-TRUST/trusts/{trust['id']}", 404)


async def test_a_trust_with_limited_uses(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"))
    trustor, trustor_password = await _user(admin)
    trustee, trustee_password = await _user(admin)
    role = await _role(admin)
    await admin("PUT", f"/projects/{project['id']}/users/{trustor['id']}/roles/{role['id']}", 204)
    body = {
        "trustor_user_id": trustor["id"],
        "trustee_user_id": trustee["id"],
        "project_id": project["id"],
        "impersonation": False,
        "roles": [{"id": role["id"]}],
        "remaining_uses": 1,
    }
    status, created = await _trust(cloud, trustor, trustor_password, body)
    assert status == 201, created
    scope = {"OS-TRUST:trust": {"id": created["trust"]["id"]}}
    status, token_body, _ = await _auth(cloud, trustee["id"], trustee_password, scope)
    assert status == 201 and token_body["token"]["user"]["id"] == trustee["id"]
    assert (await _auth(cloud, trustee["id"], trustee_password, scope))[0] == 401  # used up
    # A trust used up is gone, as an expired one.
    listed = await admin("GET", f"/OS-TRUST/trusts?trustor_user_id={trustor['id']}", 200)
    assert listed["trusts"] == []


async def test_access_rules_limit_what_a_credential_token_may_call(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    rules = [{"service": "compute", "path": "/v2.1/servers", "method": "GET"}]
    body = {"application_credential": {"name": _name("ac"), "access_rules": rules}}
    status, created, _ = await cloud.request(
        "POST", f"/identity/v3/users/{member.user_id}/application_credentials", token=token, json=body
    )
    assert status == 201, created
    credential = created["application_credential"]
    rule = credential["access_rules"][0]
    assert {k: rule[k] for k in ("service", "path", "method")} == rules[0]
    auth = {
        "identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": credential["id"], "secret": credential["secret"]},
        }
    }
    status, _, headers = await cloud.request(
        "POST", "/identity/v3/auth/tokens", token="", json={"auth": auth}
    )
    limited = headers["X-Subject-Token"]
    assert (await cloud.request("GET", "/compute/v2.1/servers", token=limited))[0] == 200
    assert (await cloud.request("GET", "/compute/v2.1/flavors", token=limited))[0] == 401
    assert (await cloud.request("GET", "/image/v2/images", token=limited))[0] == 401
    listed = await cloud.request("GET", f"/identity/v3/users/{member.user_id}/access_rules", token=token)
    assert [r["id"] for r in listed[1]["access_rules"]] == [rule["id"]]
    path = f"/identity/v3/users/{member.user_id}/access_rules/{rule['id']}"
    assert (await cloud.request("DELETE", path, token=token))[0] == 403  # still in use
    cred_path = f"/identity/v3/users/{member.user_id}/application_credentials/{credential['id']}"
    assert (await cloud.request("DELETE", cred_path, token=token))[0] == 204
    assert (await cloud.request("GET", path, token=token))[0] == 200  # it outlives the credential
    assert (await cloud.request("DELETE", path, token=token))[0] == 204


async def test_oauth1_consumers(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    body = {"consumer": {"description": "an app"}}
    created = (await admin("POST", "/OS-OAUTH1/consumers", 201, json=body))["consumer"]
    assert created["description"] == "an app" and created["secret"]
    shown = await admin("GET", f"/OS-OAUTH1/consumers/{created['id']}", 200)
    assert "secret" not in shown["consumer"]
    await admin("PATCH", f"/OS-OAUTH1/consumers/{created['id']}", 400, json={"consumer": {"secret": "x"}})
    body = {"consumer": {"description": "renamed"}}
    assert (await admin("PATCH", f"/OS-OAUTH1/consumers/{created['id']}", 200, json=body))["consumer"] == {
        **shown["consumer"],
        "description": "renamed",
    }
    listed = await admin("GET", "/OS-OAUTH1/consumers", 200)
    assert created["id"] in {c["id"] for c in listed["consumers"]}
    member = await cloud.new_member()
    assert (await cloud.request("POST", "/identity/v3/OS-OAUTH1/consumers", who=member, json=body))[0] == 403
    await admin("DELETE", f"/OS-OAUTH1/consumers/{created['id']}", 204)
    await admin("GET", f"/OS-OAUTH1/consumers/{created['id']}", 404)


async def test_domain_configuration(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    defaults = await admin("GET", "/domains/config/default", 200)
    assert defaults["config"]["identity"]["driver"] == "sql"
    assert (await admin("GET", "/domains/config/ldap/url/default", 200))["config"] == {
        "url": "ldap://localhost"
    }
    domain = await admin.create("domain", name=_name("d"))
    base = f"/domains/{domain['id']}/config"
    await admin("GET", base, 404)
    config = {"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://x.test", "password": "hidden"}}
    created = await admin("PUT", base, 201, json={"config": config})
    assert created["config"] == {"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://x.test"}}
    await admin("PUT", base, 403, json={"config": {"smtp": {"host": "x"}}})
    await admin("PUT", base, 403, json={"config": {"ldap": {"colour": "red"}}})
    await admin("PATCH", f"{base}/identity/driver", 200, json={"config": {"driver": "sql"}})
    assert (await admin("GET", f"{base}/identity/driver", 200))["config"] == {"driver": "sql"}
    await admin("DELETE", f"{base}/ldap", 204)
    await admin("GET", f"{base}/ldap", 404)
    await admin("DELETE", base, 204)
    await admin("GET", base, 404)
    await admin("GET", f"/domains/{uuid.uuid4().hex}/config", 404)


async def test_a_trust_token_redelegates_a_narrower_trust(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"))
    (trustor, trustor_password), (middle, middle_password) = await _user(admin), await _user(admin)
    last, last_password = await _user(admin)
    one, two = await _role(admin), await _role(admin)
    for role in (one, two):
        await admin("PUT", f"/projects/{project['id']}/users/{trustor['id']}/roles/{role['id']}", 204)
    body = {
        "trustor_user_id": trustor["id"],
        "trustee_user_id": middle["id"],
        "project_id": project["id"],
        "impersonation": False,
        "roles": [{"id": one["id"]}, {"id": two["id"]}],
        "allow_redelegation": True,
    }
    status, created = await _trust(cloud, trustor, trustor_password, body)
    assert status == 201 and created["trust"]["redelegation_count"] == 3, created
    first = created["trust"]
    _, _, middle_token = await _auth(
        cloud, middle["id"], middle_password, {"OS-TRUST:trust": {"id": first["id"]}}
    )
    redelegated = {
        **body,
        "trustor_user_id": middle["id"],
        "trustee_user_id": last["id"],
        "roles": [{"id": one["id"]}],
    }
    path = "/identity/v3/OS-TRUST/trusts"
    wider = {**redelegated, "impersonation": True}
    assert (await cloud.request("POST", path, token=middle_token, json={"trust": wider}))[0] == 403
    status, second, _ = await cloud.request("POST", path, token=middle_token, json={"trust": redelegated})
    assert status == 201, second
    second = second["trust"]
    assert second["redelegated_trust_id"] == first["id"] and second["redelegation_count"] == 2
    # Its token holds the first trustor's role, though the middle user never held it.
    status, token_body, last_token = await _auth(
        cloud, last["id"], last_password, {"OS-TRUST:trust": {"id": second["id"]}}
    )
    assert status == 201, token_body
    assert [r["id"] for r in token_body["token"]["roles"]] == [one["id"]]
    # Deleting the first trust ends the one redelegated from it, and its tokens.
    await admin("DELETE", f"/OS-TRUST/trusts/{first['id']}", 204)
    await admin("GET", f"/OS-TRUST/trusts/{second['id']}", 404)
    assert (await cloud.request("GET", "/identity/v3/auth/catalog", token=last_token))[0] == 401
