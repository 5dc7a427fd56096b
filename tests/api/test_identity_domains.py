"""Keystone's domains, project hierarchy and tags, users' extra attributes and groups."""

from __future__ import annotations

import secrets
import uuid

from tests.api.conftest import Cloud
from tests.api.test_identity_grants import Admin, _admin, _auth, _name, _user


async def test_domain_lifecycle_through_the_cli(cloud: Cloud) -> None:
    name = _name("d")
    created = cloud.openstack("domain", "create", "--description", "a domain", name)
    assert created["enabled"] is True and created["description"] == "a domain"
    cloud.openstack("project", "create", "--domain", name, _name("p"))
    cloud.openstack("user", "create", "--domain", name, "--password", "pw-1234567", _name("u"))
    cloud.openstack("group", "create", "--domain", name, _name("g"))
    # An enabled domain cannot be deleted.
    assert "disable it first" in cloud.openstack_fails("domain", "delete", name).stderr
    cloud.openstack("domain", "set", "--disable", name, fmt=None)
    assert cloud.openstack("domain", "show", name)["enabled"] is False
    cloud.openstack("domain", "delete", name, fmt=None)
    assert name not in {d["Name"] for d in cloud.openstack("domain", "list")}
    # Everything it owned went with it.
    admin = await _admin(cloud)
    for kind in ("projects", "users", "groups"):
        assert (await admin("GET", f"/{kind}?domain_id={created['id']}", 200))[kind] == []


async def test_a_disabled_domain_refuses_its_users_and_revokes_their_tokens(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    domain = await admin.create("domain", name=_name("d"))
    project = await admin.create("project", name=_name("p"), domain_id=domain["id"])
    user, password = await _user(admin, domain["id"])
    member = (await admin("GET", "/roles?name=member", 200))["roles"][0]
    await admin("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{member['id']}", 204)
    status, _, token = await _auth(cloud, user["id"], password, {"project": {"id": project["id"]}})
    assert status == 201
    await admin("PATCH", f"/domains/{domain['id']}", 200, json={"domain": {"enabled": False}})
    assert (await _auth(cloud, user["id"], password))[0] == 401
    assert (await cloud.request("GET", "/identity/v3/auth/projects", token=token))[0] == 401
    await admin("PATCH", "/domains/default", 403, json={"domain": {"enabled": False}})
    await admin("DELETE", "/domains/default", 403)
    await admin("DELETE", f"/domains/{domain['id']}", 204)
    await admin("GET", f"/users/{user['id']}", 404)
    await admin("GET", f"/projects/{project['id']}", 404)


async def test_domain_requests_are_checked(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    await admin("POST", "/domains", 400, json={"domain": {"name": ""}})
    await admin("POST", "/domains", 400, json={"domain": {"name": "a" * 65}})
    await admin("POST", "/domains", 400, json={"domain": {"name": _name("d"), "enabled": "yes"}})
    name = _name("d")
    await admin.create("domain", name=name)
    await admin("POST", "/domains", 409, json={"domain": {"name": name}})
    await admin("DELETE", f"/domains/{uuid.uuid4().hex}", 404)
    member = await cloud.new_member()
    status, _, _ = await cloud.request(
        "POST", "/identity/v3/domains", who=member, json={"domain": {"name": _name("d")}}
    )
    assert status == 403


async def test_a_project_acting_as_a_domain(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("d"), is_domain=True)
    assert project["is_domain"] is True
    domains = await admin("GET", "/domains", 200)
    assert project["id"] in {d["id"] for d in domains["domains"]}
    listed = await admin("GET", "/projects?is_domain=true", 200)
    assert project["id"] in {p["id"] for p in listed["projects"]}
    await admin("PATCH", f"/projects/{project['id']}", 200, json={"project": {"enabled": False}})
    await admin("DELETE", f"/projects/{project['id']}", 204)
    await admin("GET", f"/domains/{project['id']}", 404)


async def test_project_hierarchy_rules(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    top = await admin.create("project", name=_name("p"))
    child = await admin.create("project", name=_name("p"), parent_id=top["id"])
    listed = await admin("GET", f"/projects?parent_id={top['id']}", 200)
    assert [p["id"] for p in listed["projects"]] == [child["id"]]
    await admin("DELETE", f"/projects/{top['id']}", 403)  # not a leaf
    await admin("PATCH", f"/projects/{top['id']}", 403, json={"project": {"enabled": False}})
    await admin("PATCH", f"/projects/{child['id']}", 403, json={"project": {"parent_id": "default"}})
    chain = [top]
    for _ in range(3):
        chain.append(await admin.create("project", name=_name("p"), parent_id=chain[-1]["id"]))
    # Five levels at most.
    await admin(
        "POST", "/projects", 201, json={"project": {"name": _name("p"), "parent_id": chain[-1]["id"]}}
    )
    deepest = (await admin("GET", f"/projects?parent_id={chain[-1]['id']}", 200))["projects"][0]
    await admin("POST", "/projects", 403, json={"project": {"name": _name("p"), "parent_id": deepest["id"]}})
    await admin("PATCH", f"/projects/{child['id']}", 200, json={"project": {"enabled": False}})
    await admin("DELETE", f"/projects/{child['id']}", 204)


async def test_project_tags(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"), tags=["a"])
    base = f"/projects/{project['id']}/tags"
    await admin("PUT", f"{base}/b", 201)
    await admin("GET", f"{base}/b", 204)
    assert sorted((await admin("GET", base, 200))["tags"]) == ["a", "b"]
    assert (await admin("PUT", base, 200, json={"tags": ["x", "y"]}))["tags"] == ["x", "y"]
    await admin("PUT", base, 400, json={"tags": ["with/slash"]})
    await admin("DELETE", f"{base}/x", 204)
    await admin("GET", f"{base}/x", 404)
    tagged = await admin("GET", "/projects?tags=y", 200)
    assert [p["id"] for p in tagged["projects"]] == [project["id"]]
    await admin("DELETE", base, 204)
    assert (await admin("GET", base, 200))["tags"] == []


async def test_users_keep_extra_attributes(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    project = await admin.create("project", name=_name("p"))
    user, password = await _user(admin, project_id=project["id"], email="u@example.org", shoe_size=44)
    assert (
        user["project_id"] == project["id"] and user["shoe_size"] == 44 and user["email"] == "u@example.org"
    )
    shown = await admin("GET", f"/users/{user['id']}", 200)
    assert shown["user"]["project_id"] == project["id"]
    updated = await admin("PATCH", f"/users/{user['id']}", 200, json={"user": {"shoe_size": 45, "team": "x"}})
    assert updated["user"]["shoe_size"] == 45 and updated["user"]["team"] == "x"
    assert updated["user"]["project_id"] == project["id"]
    # A user changes their own password with the old one (no token needed); the old one stops working.
    new = secrets.token_urlsafe(12)
    status, _, _ = await cloud.request(
        "POST",
        f"/identity/v3/users/{user['id']}/password",
        token="",
        json={"user": {"original_password": password, "password": new}},
    )
    assert status == 204
    assert (await _auth(cloud, user["id"], password))[0] == 401
    assert (await _auth(cloud, user["id"], new))[0] == 201


async def test_groups_lifecycle_and_membership(cloud: Cloud) -> None:
    admin: Admin = await _admin(cloud)
    name = _name("g")
    group = cloud.openstack("group", "create", "--description", "a group", name)
    user, _ = await _user(admin)
    cloud.openstack("group", "add", "user", name, user["name"], fmt=None)
    contains = cloud.openstack("group", "contains", "user", name, user["name"], fmt=None)
    assert contains.strip() == f"{user['name']} in group {name}"
    members = await admin("GET", f"/groups/{group['id']}/users", 200)
    assert [u["id"] for u in members["users"]] == [user["id"]]
    renamed = await admin("PATCH", f"/groups/{group['id']}", 200, json={"group": {"name": _name("g")}})
    assert renamed["group"]["description"] == "a group"
    await admin("POST", "/groups", 409, json={"group": {"name": renamed["group"]["name"]}})
    cloud.openstack("group", "remove", "user", group["id"], user["name"], fmt=None)
    await admin("DELETE", f"/groups/{group['id']}", 204)
    await admin("GET", f"/groups/{group['id']}", 404)


async def test_lists_filter_exactly_and_inexactly_as_keystone(cloud: Cloud) -> None:
    """Keystone's inexact filters (`name__contains`, `__startswith`, ..., case-insensitive with an
    `i`), on users, projects, groups, roles and domains; a filter on what no user here has
    (federation, expiring passwords) matches nothing; an unknown parameter is ignored, as Keystone."""
    admin = await _admin(cloud)
    stem = "x" + uuid.uuid4().hex[:8]  # a letter: its upper case differs
    made = {}
    for kind in ("project", "group", "role", "domain"):
        made[kind] = [await admin.create(kind, name=f"Aa_{stem}_{kind}_{i}") for i in range(2)]
    user = await admin.create("user", name=f"Aa_{stem}_user_0", password=secrets.token_urlsafe(12))

    async def names(path: str) -> list[str]:
        body = await admin("GET", path, 200)
        key = path.split("?")[0].strip("/")
        return sorted(item["name"] for item in body[key])

    for kind in ("project", "group", "role", "domain"):
        expected = sorted(item["name"] for item in made[kind])
        assert await names(f"/{kind}s?name__contains={stem}_{kind}") == expected
        assert await names(f"/{kind}s?name__icontains={stem.upper()}_{kind.upper()}") == expected
        assert await names(f"/{kind}s?name__contains={stem.upper()}_{kind}") == []
        assert await names(f"/{kind}s?name__istartswith=aa_{stem}_{kind}") == expected
        assert await names(f"/{kind}s?name__endswith={stem}_{kind}_1") == [expected[1]]
        assert await names(f"/{kind}s?name__contains=%25{stem}") == []  # LIKE's wildcards are literal
        assert await names(f"/{kind}s?name={expected[0]}&no_such_filter=1") == [expected[0]]
    assert await names(f"/users?name__startswith=Aa_{stem}_user") == [user["name"]]
    assert await names(f"/users?name__startswith=Aa_{stem}_user&idp_id=x") == []
    assert await names(f"/users?name__startswith=Aa_{stem}_user&password_expires_at=lt:2100-01-01") == []
    for kind in ("domain",):
        for domain in made[kind]:
            await admin("PATCH", f"/domains/{domain['id']}", 200, json={"domain": {"enabled": False}})
            await admin("DELETE", f"/domains/{domain['id']}", 204)
