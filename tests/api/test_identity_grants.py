"""Keystone's assignments: grants to users and groups on projects, domains and the system,
inherited grants (OS-INHERIT), role implications, system- and domain-scoped tokens, and token
roles computed when a token is used."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from tests.api.conftest import Cloud, Credentials


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


class Admin:
    """Identity calls as the cloud's admin."""

    def __init__(self, cloud: Cloud, token: str) -> None:
        self.cloud, self.token = cloud, token

    async def __call__(self, method: str, path: str, status: int | None = None, **kwargs: Any) -> Any:
        got, body, _ = await self.cloud.request(method, f"/identity/v3{path}", token=self.token, **kwargs)
        if status is not None:
            assert got == status, (method, path, got, body)
        return body

    async def create(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = await self("POST", f"/{kind}s", 201, json={kind: fields})
        return body[kind]


async def _admin(cloud: Cloud) -> Admin:
    return Admin(cloud, await cloud.token())


async def _user(admin: Admin, domain_id: str = "default", **extra: Any) -> tuple[dict[str, Any], str]:
    password = secrets.token_urlsafe(12)
    user = await admin.create("user", name=_name("u"), password=password, domain_id=domain_id, **extra)
    return user, password


async def _auth(cloud: Cloud, user_id: str, password: str, scope: Any = None) -> tuple[int, Any, str]:
    auth: dict[str, Any] = {
        "identity": {"methods": ["password"], "password": {"user": {"id": user_id, "password": password}}}
    }
    if scope is not None:
        auth["scope"] = scope
    status, body, headers = await cloud.request(
        "POST", "/identity/v3/auth/tokens", token="", json={"auth": auth}
    )
    return status, body, headers.get("X-Subject-Token", "")


async def _role(admin: Admin, **fields: Any) -> dict[str, Any]:
    return await admin.create("role", name=_name("r"), **fields)


async def test_system_role_gives_a_system_scoped_token(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    user, password = await _user(admin)
    reader = (await admin("GET", "/roles?name=reader", 200))["roles"][0]
    status, _, _ = await _auth(cloud, user["id"], password, {"system": {"all": True}})
    assert status == 401  # no role on the system yet
    await admin("PUT", f"/system/users/{user['id']}/roles/{reader['id']}", 204)
    await admin("HEAD", f"/system/users/{user['id']}/roles/{reader['id']}", 204)
    listed = await admin("GET", f"/system/users/{user['id']}/roles", 200)
    assert [r["id"] for r in listed["roles"]] == [reader["id"]]
    status, body, token = await _auth(cloud, user["id"], password, {"system": {"all": True}})
    assert status == 201, body
    assert body["token"]["system"] == {"all": True}
    assert "project" not in body["token"] and [r["name"] for r in body["token"]["roles"]] == ["reader"]
    # A system reader reads everything (Keystone's ADMIN_OR_SYSTEM_READER) and changes nothing.
    status, users, _ = await cloud.request("GET", "/identity/v3/users", token=token)
    assert status == 200 and any(u["id"] == user["id"] for u in users["users"])
    status, _, _ = await cloud.request(
        "POST", "/identity/v3/projects", token=token, json={"project": {"name": _name("p")}}
    )
    assert status == 403
    system = await cloud.request("GET", "/identity/v3/auth/system", token=token)
    assert system[1]["system"] == [{"all": True}]
    assignments = await admin("GET", f"/role_assignments?user.id={user['id']}&scope.system=all", 200)
    assert [a["scope"] for a in assignments["role_assignments"]] == [{"system": {"all": True}}]
    await admin("DELETE", f"/system/users/{user['id']}/roles/{reader['id']}", 204)
    status, _, _ = await cloud.request("GET", "/identity/v3/users", token=token)
    assert status == 401  # its only role is gone: the token holds none


async def test_the_cli_grants_a_system_role_and_issues_a_system_token(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    user, password = await _user(admin)
    cloud.openstack("role", "add", "--system", "all", "--user", user["id"], "admin", fmt=None)
    listed = cloud.openstack("role", "assignment", "list", "--system", "all", "--user", user["id"], "--names")
    assert [a["Role"] for a in listed] == ["admin"]
    env = cloud.env(Credentials(user["name"], password, ""))
    env.pop("OS_PROJECT_NAME")
    env.pop("OS_PROJECT_DOMAIN_NAME")
    env["OS_SYSTEM_SCOPE"] = "all"
    from tests.api.conftest import run_cli

    result = run_cli(["token", "issue", "-f", "json"], env, 120)
    assert result.returncode == 0, result.stderr
    cloud.openstack("role", "remove", "--system", "all", "--user", user["id"], "admin", fmt=None)
    assert cloud.openstack("role", "assignment", "list", "--system", "all", "--user", user["id"]) == []


async def test_a_group_role_reaches_its_members_tokens(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"))
    group = await admin.create("group", name=_name("g"))
    user, password = await _user(admin)
    role = await _role(admin)
    await admin("PUT", f"/projects/{project['id']}/groups/{group['id']}/roles/{role['id']}", 204)
    scope = {"project": {"id": project["id"]}}
    assert (await _auth(cloud, user["id"], password, scope))[0] == 401
    await admin("PUT", f"/groups/{group['id']}/users/{user['id']}", 204)
    await admin("HEAD", f"/groups/{group['id']}/users/{user['id']}", 204)
    status, body, token = await _auth(cloud, user["id"], password, scope)
    assert status == 201 and [r["id"] for r in body["token"]["roles"]] == [role["id"]]
    effective = await admin("GET", f"/role_assignments?effective&user.id={user['id']}", 200)
    assert [(a["role"]["id"], a["scope"]) for a in effective["role_assignments"]] == [
        (role["id"], {"project": {"id": project["id"]}})
    ]
    assert "membership" in effective["role_assignments"][0]["links"]
    groups = await admin("GET", f"/users/{user['id']}/groups", 200)
    assert [g["id"] for g in groups["groups"]] == [group["id"]]
    # Leaving the group takes the role away from the token at once.
    await admin("DELETE", f"/groups/{group['id']}/users/{user['id']}", 204)
    await admin("HEAD", f"/groups/{group['id']}/users/{user['id']}", 404)
    status, _, _ = await cloud.request("GET", f"/identity/v3/projects/{project['id']}", token=token)
    assert status == 401


async def test_a_role_granted_after_issue_counts_and_a_revoked_one_ends_only_that_scope(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    one, two = await admin.create("project", name=_name("p")), await admin.create("project", name=_name("p"))
    user, password = await _user(admin)
    member = (await admin("GET", "/roles?name=member", 200))["roles"][0]
    extra = await _role(admin)
    for project in (one, two):
        await admin("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{member['id']}", 204)
    _, _, token_one = await _auth(cloud, user["id"], password, {"project": {"id": one["id"]}})
    _, _, token_two = await _auth(cloud, user["id"], password, {"project": {"id": two["id"]}})
    await admin("PUT", f"/projects/{one['id']}/users/{user['id']}/roles/{extra['id']}", 204)
    status, body, _ = await cloud.request(
        "GET", "/identity/v3/auth/tokens", token=token_one, headers={"X-Subject-Token": token_one}
    )
    assert status == 200  # a user validates their own token
    assert extra["id"] in {r["id"] for r in body["token"]["roles"]}
    await admin("DELETE", f"/projects/{one['id']}/users/{user['id']}/roles/{extra['id']}", 204)
    assert (await cloud.request("GET", "/identity/v3/auth/projects", token=token_one))[0] == 401
    assert (await cloud.request("GET", "/identity/v3/auth/projects", token=token_two))[0] == 200


async def test_domain_grants_domain_tokens_and_inherited_roles(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    domain = await admin.create("domain", name=_name("d"))
    top = await admin.create("project", name=_name("p"), domain_id=domain["id"])
    leaf = await admin.create("project", name=_name("p"), domain_id=domain["id"], parent_id=top["id"])
    assert leaf["parent_id"] == top["id"] and top["parent_id"] == domain["id"]
    user, password = await _user(admin, domain["id"])
    role, sub = await _role(admin), await _role(admin)
    await admin("PUT", f"/domains/{domain['id']}/users/{user['id']}/roles/{role['id']}", 204)
    status, body, _ = await _auth(cloud, user["id"], password, {"domain": {"name": domain["name"]}})
    assert status == 201 and body["token"]["domain"] == {"id": domain["id"], "name": domain["name"]}
    domains = await cloud.request("GET", "/identity/v3/auth/domains", token=_)
    assert [d["id"] for d in domains[1]["domains"]] == [domain["id"]]
    # A plain domain role gives nothing on its projects; an inherited one gives every project below.
    assert (await _auth(cloud, user["id"], password, {"project": {"id": leaf["id"]}}))[0] == 401
    path = f"/OS-INHERIT/projects/{top['id']}/users/{user['id']}/roles/{sub['id']}/inherited_to_projects"
    await admin("PUT", path, 204)
    await admin("HEAD", path, 204)
    assert (await _auth(cloud, user["id"], password, {"project": {"id": top["id"]}}))[0] == 401
    status, body, _ = await _auth(cloud, user["id"], password, {"project": {"id": leaf["id"]}})
    assert status == 201 and [r["id"] for r in body["token"]["roles"]] == [sub["id"]]
    listed = await admin(
        "GET", f"/role_assignments?user.id={user['id']}&scope.OS-INHERIT:inherited_to=projects", 200
    )
    assert [a["scope"]["OS-INHERIT:inherited_to"] for a in listed["role_assignments"]] == ["projects"]
    effective = await admin(
        "GET", f"/role_assignments?effective&user.id={user['id']}&scope.project.id={leaf['id']}", 200
    )
    assert [a["role"]["id"] for a in effective["role_assignments"]] == [sub["id"]]
    await admin("DELETE", path, 204)
    effective = await admin(
        "GET", f"/role_assignments?effective&user.id={user['id']}&scope.project.id={leaf['id']}", 200
    )
    assert effective["role_assignments"] == []


async def test_implied_roles_count_and_domain_roles_only_through_them(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    domain = await admin.create("domain", name=_name("d"))
    project = await admin.create("project", name=_name("p"), domain_id=domain["id"])
    user, password = await _user(admin, domain["id"])
    prior, implied = await _role(admin), await _role(admin)
    domain_role = await _role(admin, domain_id=domain["id"])
    body = await admin("PUT", f"/roles/{prior['id']}/implies/{implied['id']}", 201)
    assert body["role_inference"]["implies"]["id"] == implied["id"]
    await admin("PUT", f"/roles/{domain_role['id']}/implies/{prior['id']}", 201)
    # A global role cannot imply a domain-specific one.
    await admin("PUT", f"/roles/{prior['id']}/implies/{domain_role['id']}", 403)
    await admin("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{domain_role['id']}", 204)
    status, body, _ = await _auth(cloud, user["id"], password, {"project": {"id": project["id"]}})
    assert status == 201
    assert sorted(r["id"] for r in body["token"]["roles"]) == sorted([prior["id"], implied["id"]])
    everything = await admin("GET", "/role_inferences", 200)
    assert any(rule["prior_role"]["id"] == prior["id"] for rule in everything["role_inferences"])
    await admin("DELETE", f"/roles/{prior['id']}/implies/{implied['id']}", 204)
    await admin("GET", f"/roles/{prior['id']}/implies/{implied['id']}", 404)
    status, body, _ = await _auth(cloud, user["id"], password, {"project": {"id": project["id"]}})
    assert [r["id"] for r in body["token"]["roles"]] == [prior["id"]]
    # The built-in roles are immutable.
    reader = (await admin("GET", "/roles?name=reader", 200))["roles"][0]
    assert reader["options"] == {"immutable": True}
    await admin("PATCH", f"/roles/{reader['id']}", 403, json={"role": {"name": "renamed"}})


async def test_grants_refuse_unknown_parts_and_other_domains_roles(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"))
    user, _ = await _user(admin)
    domain = await admin.create("domain", name=_name("d"))
    foreign = await _role(admin, domain_id=domain["id"])
    await admin("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{uuid.uuid4().hex}", 404)
    await admin("PUT", f"/projects/{uuid.uuid4().hex}/users/{user['id']}/roles/{foreign['id']}", 404)
    await admin("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{foreign['id']}", 403)
    await admin("PUT", f"/system/users/{user['id']}/roles/{foreign['id']}", 400)
    member = (await admin("GET", "/roles?name=member", 200))["roles"][0]
    await admin("DELETE", f"/projects/{project['id']}/users/{user['id']}/roles/{member['id']}", 404)
    listed = await admin("GET", f"/role_assignments?user.id={user['id']}", 200)
    assert listed["role_assignments"] == []
