"""Image metadata definitions (/image/v2/metadefs) as Glance serves them: namespaces with their
objects, properties, tags and resource-type associations; admins change them, others see the
public ones and their own; protected namespaces keep their contents; bad bodies get Glance's
400/403/409; the schemas are served. Driven through the raw API and the real `openstack` CLI."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

from tests.api.conftest import Cloud, Credentials

NS = "/image/v2/metadefs/namespaces"


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def create_namespace(cloud: Cloud, token: str, **fields: Any) -> dict[str, Any]:
    body = {"namespace": unique("ns"), "visibility": "public", **fields}
    status, namespace, _ = await cloud.request("POST", NS, token=token, json=body)
    assert status == 201, namespace
    return namespace


async def delete_namespace(cloud: Cloud, token: str, name: str) -> None:
    status, body, _ = await cloud.request(
        "PUT", f"{NS}/{name}", token=token, json={"namespace": name, "protected": False}
    )
    assert status in (200, 404), body
    status, body, _ = await cloud.request("DELETE", f"{NS}/{name}", token=token)
    assert status in (204, 404), body


async def test_namespace_lifecycle_with_contents_and_protection(cloud: Cloud) -> None:
    token = await cloud.token()
    status, types, _ = await cloud.request("GET", "/image/v2/metadefs/resource_types", token=token)
    assert status == 200, types
    assert "OS::Glance::Image" in {t["name"] for t in types["resource_types"]}
    name = unique("ns")
    body = {
        "namespace": name,
        "display_name": "Hardware",
        "description": "What the hypervisor understands",
        "visibility": "public",
        "protected": True,
        "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}],
        "properties": {"cpu_cores": {"title": "Cores", "type": "integer", "minimum": 1}},
        "objects": [{"name": "Video", "properties": {"video_ram": {"title": "RAM", "type": "integer"}}}],
        "tags": [{"name": "fast"}, {"name": "cheap"}],
    }
    status, created, headers = await cloud.request("POST", NS, token=token, json=body)
    assert status == 201, created
    try:
        assert headers["Location"].endswith(f"{NS}/{name}")
        assert created["namespace"] == name and created["protected"] is True
        assert created["self"] == f"/v2/metadefs/namespaces/{name}"
        assert created["schema"] == "/v2/schemas/metadefs/namespace"
        status, shown, _ = await cloud.request("GET", f"{NS}/{name}", token=token)
        assert status == 200, shown
        assert shown["properties"] == {"cpu_cores": {"title": "Cores", "type": "integer", "minimum": 1}}
        assert [o["name"] for o in shown["objects"]] == ["Video"]
        assert sorted(t["name"] for t in shown["tags"]) == ["cheap", "fast"]
        assert [(a["name"], a["prefix"]) for a in shown["resource_type_associations"]] == [
            ("OS::Glance::Image", "hw_")
        ]
        # Shown for a resource type, property names carry that type's prefix.
        status, prefixed, _ = await cloud.request(
            "GET", f"{NS}/{name}?resource_type=OS::Glance::Image", token=token
        )
        assert set(prefixed["properties"]) == {"hw_cpu_cores"}
        assert set(prefixed["objects"][0]["properties"]) == {"hw_video_ram"}
        status, prop, _ = await cloud.request(
            "GET", f"{NS}/{name}/properties/hw_cpu_cores?resource_type=OS::Glance::Image", token=token
        )
        assert status == 200 and prop["name"] == "cpu_cores", prop
        # Nothing in a protected namespace is deleted, nor the namespace.
        for path, message in (
            ("", f"Metadata definition namespace {name} is protected and cannot be deleted."),
            ("/objects/Video", "Metadata definition object Video is protected and cannot be deleted."),
            (
                "/properties/cpu_cores",
                "Metadata definition property cpu_cores is protected and cannot be deleted.",
            ),
            ("/tags/fast", "Metadata definition tag fast is protected and cannot be deleted."),
            ("/tags", f"Metadata definition namespace {name} is protected and cannot be deleted."),
        ):
            status, err, _ = await cloud.request("DELETE", f"{NS}/{name}{path}", token=token)
            assert status == 403 and err["message"] == message, (path, err)
        # A PUT returns what it leaves out to the defaults: private, not protected.
        status, updated, _ = await cloud.request(
            "PUT", f"{NS}/{name}", token=token, json={"namespace": name, "description": "now"}
        )
        assert status == 200, updated
        assert (updated["visibility"], updated["protected"], updated["description"]) == (
            "private",
            False,
            "now",
        )
        assert "display_name" not in updated
    finally:
        await delete_namespace(cloud, token, name)
    status, err, _ = await cloud.request("GET", f"{NS}/{name}", token=token)
    assert status == 404 and err["message"] == f"Metadata definition namespace={name} was not found.", err
    # The contents went with it: a new namespace of that name starts empty.
    again = await create_namespace(cloud, token, namespace=name)
    try:
        status, objects, _ = await cloud.request("GET", f"{NS}/{name}/objects", token=token)
        assert objects["objects"] == [] and objects["schema"] == "v2/schemas/metadefs/objects"
        assert again["namespace"] == name
    finally:
        await delete_namespace(cloud, token, name)


async def test_only_admins_change_and_others_see_public_or_their_own(
    cloud: Cloud, member: Credentials
) -> None:
    admin = await cloud.token()
    user = await cloud.token(member)
    public = await create_namespace(cloud, admin, visibility="public")
    private = await create_namespace(cloud, admin, visibility="private")
    mine = await create_namespace(cloud, admin, visibility="private", owner=member.project_id)
    try:
        status, listed, _ = await cloud.request("GET", f"{NS}?limit=1000", token=user)
        assert status == 200, listed
        names = {n["namespace"] for n in listed["namespaces"]}
        assert public["namespace"] in names and mine["namespace"] in names
        assert private["namespace"] not in names
        status, err, _ = await cloud.request("GET", f"{NS}/{private['namespace']}", token=user)
        assert status == 404, err
        status, err, _ = await cloud.request("GET", f"{NS}/{private['namespace']}/objects", token=user)
        assert status == 404 and err["message"] == f"Namespace {private['namespace']} not found", err
        # Seeing is not changing.
        status, err, _ = await cloud.request(
            "POST", f"{NS}/{public['namespace']}/objects", token=user, json={"name": "o"}
        )
        assert status == 403, err
        assert err["message"] == "You are not authorized to complete add_metadef_object action."
        status, err, _ = await cloud.request("POST", NS, token=user, json={"namespace": unique("ns")})
        assert status == 403, err
        status, err, _ = await cloud.request("DELETE", f"{NS}/{mine['namespace']}", token=user)
        assert status == 403, err
        # Filters: visibility and resource types.
        status, listed, _ = await cloud.request("GET", f"{NS}?visibility=private&limit=1000", token=admin)
        assert {n["visibility"] for n in listed["namespaces"]} == {"private"}
        status, err, _ = await cloud.request("GET", f"{NS}?visibility=shared", token=admin)
        assert status == 400 and err["message"] == "Invalid visibility value: shared", err
        for query in ("limit=x", "limit=-1", "sort_dir=up", "sort_key=nope"):
            status, err, _ = await cloud.request("GET", f"{NS}?{query}", token=admin)
            assert status == 400, (query, err)
    finally:
        for namespace in (public, private, mine):
            await delete_namespace(cloud, admin, namespace["namespace"])


async def test_listing_pages_with_markers(cloud: Cloud) -> None:
    token = await cloud.token()
    label = unique("page")
    created = [await create_namespace(cloud, token, namespace=f"{label}-{i}") for i in range(5)]
    try:
        seen: list[str] = []
        path = f"{NS}?sort_key=namespace&sort_dir=asc&limit=2&resource_types=OS::Nova::Flavor"
        status, page, _ = await cloud.request("GET", path, token=token)
        assert status == 200 and page["namespaces"] == [], page
        for namespace in created:
            status, body, _ = await cloud.request(
                "POST", f"{NS}/{namespace['namespace']}/resource_types", token=token, json={"name": label}
            )
            assert status == 201 and body["name"] == label, body
        path = f"{NS}?sort_key=namespace&sort_dir=asc&limit=2&resource_types={label}"
        while path:
            status, page, _ = await cloud.request("GET", "/image" + path.removeprefix("/image"), token=token)
            assert status == 200, page
            seen += [n["namespace"] for n in page["namespaces"]]
            path = page.get("next", "").replace("/v2/", "/image/v2/", 1)
        assert seen == [n["namespace"] for n in created]
        # A type named in an association is created on the way, and listed from then on.
        status, types, _ = await cloud.request("GET", "/image/v2/metadefs/resource_types", token=token)
        assert label in {t["name"] for t in types["resource_types"]}
    finally:
        for namespace in created:
            await delete_namespace(cloud, token, namespace["namespace"])


async def test_objects_properties_tags_and_associations(cloud: Cloud) -> None:
    token = await cloud.token()
    namespace = (await create_namespace(cloud, token))["namespace"]
    base = f"{NS}/{namespace}"
    try:
        status, obj, _ = await cloud.request(
            "POST",
            f"{base}/objects",
            token=token,
            json={"name": "Limits", "required": ["a"], "properties": {"a": {"title": "A", "type": "string"}}},
        )
        assert status == 201 and obj["self"] == f"/v2/metadefs/namespaces/{namespace}/objects/Limits", obj
        status, err, _ = await cloud.request("POST", f"{base}/objects", token=token, json={"name": "Limits"})
        assert status == 409, err
        assert err["message"] == (
            f"A metadata definition object with name=Limits already exists in namespace={namespace}."
        )
        status, obj, _ = await cloud.request(
            "PUT", f"{base}/objects/Limits", token=token, json={"name": "Quota"}
        )
        assert status == 200 and obj["name"] == "Quota" and "properties" not in obj, obj
        status, err, _ = await cloud.request("GET", f"{base}/objects/Limits", token=token)
        assert status == 404, err
        status, _, _ = await cloud.request("DELETE", f"{base}/objects/Quota", token=token)
        assert status == 204

        prop = {"name": "hypervisor", "title": "Hypervisor", "type": "string", "enum": ["kvm", "qemu"]}
        status, created, _ = await cloud.request("POST", f"{base}/properties", token=token, json=prop)
        assert status == 201 and created == prop, created
        status, listed, _ = await cloud.request("GET", f"{base}/properties", token=token)
        assert listed == {
            "properties": {"hypervisor": {"title": "Hypervisor", "type": "string", "enum": ["kvm", "qemu"]}}
        }
        status, renamed, _ = await cloud.request(
            "PUT", f"{base}/properties/hypervisor", token=token, json={**prop, "name": "hv", "title": "HV"}
        )
        assert status == 200 and renamed["name"] == "hv" and renamed["title"] == "HV", renamed
        status, _, _ = await cloud.request("DELETE", f"{base}/properties/hv", token=token)
        assert status == 204
        status, listed, _ = await cloud.request("GET", f"{base}/properties", token=token)
        assert listed == {"properties": {}}

        tags = {"tags": [{"name": "a"}, {"name": "b"}]}
        status, created, _ = await cloud.request("POST", f"{base}/tags", token=token, json=tags)
        assert status == 201 and created == tags, created
        status, created, _ = await cloud.request(
            "POST",
            f"{base}/tags",
            token=token,
            json={"tags": [{"name": "c"}]},
            headers={"X-Openstack-Append": "true"},
        )
        assert status == 201, created
        status, listed, _ = await cloud.request("GET", f"{base}/tags?sort_key=name&sort_dir=asc", token=token)
        assert [t["name"] for t in listed["tags"]] == ["a", "b", "c"]
        status, err, _ = await cloud.request("POST", f"{base}/tags/A", token=token)
        assert status == 409 and "case insensitive" in err["message"], err
        status, tag, _ = await cloud.request("PUT", f"{base}/tags/a", token=token, json={"name": "z"})
        assert status == 200 and tag["name"] == "z", tag
        status, created, _ = await cloud.request(
            "POST", f"{base}/tags", token=token, json={"tags": [{"name": "x"}]}
        )
        status, listed, _ = await cloud.request("GET", f"{base}/tags", token=token)
        assert [t["name"] for t in listed["tags"]] == ["x"]
        status, _, _ = await cloud.request("DELETE", f"{base}/tags", token=token)
        assert status == 204
        status, listed, _ = await cloud.request("GET", f"{base}/tags", token=token)
        assert listed["tags"] == []

        status, assoc, _ = await cloud.request(
            "POST", f"{base}/resource_types", token=token, json={"name": "OS::Nova::Flavor", "prefix": "hw:"}
        )
        assert status == 201 and assoc["prefix"] == "hw:", assoc
        status, err, _ = await cloud.request(
            "POST", f"{base}/resource_types", token=token, json={"name": "OS::Nova::Flavor"}
        )
        assert status == 409, err
        status, _, _ = await cloud.request("DELETE", f"{base}/resource_types/OS::Nova::Flavor", token=token)
        assert status == 204
        status, err, _ = await cloud.request("DELETE", f"{base}/resource_types/OS::Nova::Flavor", token=token)
        assert status == 404 and err["message"] == "Failed to find resource type OS::Nova::Flavor to delete"
    finally:
        await delete_namespace(cloud, token, namespace)


async def test_bad_bodies_get_glances_answers_and_change_nothing(cloud: Cloud) -> None:
    token = await cloud.token()
    name = unique("ns")
    for body, status, message in (
        (
            {"visibility": "public"},
            400,
            "Provided object does not match schema 'namespace': 'namespace' is a required property",
        ),
        ({"namespace": name, "visibility": "shared"}, 400, "'shared' is not one of ['public', 'private']"),
        ({"namespace": name, "protected": "yes"}, 400, "'yes' is not of type 'boolean'"),
        (
            {"namespace": name, "nope": 1},
            400,
            "Additional properties are not allowed ('nope' was unexpected)",
        ),
        ({"namespace": "x" * 81}, 400, "is too long"),
        ({"namespace": name, "properties": {"p": {"type": "string"}}}, 400, "'title' is a required property"),
        ({"namespace": name, "created_at": "now"}, 403, "Attribute 'created_at' is read-only."),
        ([name], 400, "is not of type 'object'"),
    ):
        got, err, _ = await cloud.request("POST", NS, token=token, json=body)
        assert got == status and message in err["message"], (body, err)
    status, err, _ = await cloud.request("GET", f"{NS}/{name}", token=token)
    assert status == 404, err
    namespace = (await create_namespace(cloud, token))["namespace"]
    try:
        for path, body, message in (
            ("/properties", {"name": "p", "title": "P"}, "'type' is a required property"),
            ("/properties", {"name": "p", "title": "P", "type": "str"}, "'str' is not one of"),
            ("/objects", {"description": "no name"}, "'name' is a required property"),
            ("/objects", {"name": "o", "properties": {"p": {"title": "P"}}}, "'type' is a required property"),
            ("/resource_types", {"prefix": "x"}, "'name' is a required property"),
            ("/tags", {"tags": [{}]}, "'name' is a required property"),
        ):
            status, err, _ = await cloud.request("POST", f"{NS}/{namespace}{path}", token=token, json=body)
            assert status == 400 and message in err["message"], (path, err)
        # A failed namespace create leaves nothing behind (duplicate tags in one request).
        status, err, _ = await cloud.request(
            "POST", NS, token=token, json={"namespace": name, "tags": [{"name": "t"}, {"name": "T"}]}
        )
        assert status == 409, err
        status, err, _ = await cloud.request("GET", f"{NS}/{name}", token=token)
        assert status == 404, err
    finally:
        await delete_namespace(cloud, token, namespace)


async def test_concurrent_creates_of_one_name_make_one_namespace(cloud: Cloud) -> None:
    token = await cloud.token()
    name = unique("ns")
    results = await asyncio.gather(
        *(cloud.request("POST", NS, token=token, json={"namespace": name}) for _ in range(4))
    )
    try:
        assert sorted(status for status, _, _ in results) == [201, 409, 409, 409]
        conflict = next(body for status, body, _ in results if status == 409)
        assert conflict["message"] == f"The metadata definition namespace={name} already exists."
    finally:
        await delete_namespace(cloud, token, name)


async def test_schemas_are_served(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    for path, name in (
        ("namespace", "namespace"),
        ("namespaces", "namespaces"),
        ("object", "object"),
        ("objects", "objects"),
        ("property", "property"),
        ("properties", "properties"),
        ("tag", "tag"),
        ("tags", "tags"),
        ("resource_type", "resource_type_association"),
        ("resource_types", "resource_type_associations"),
    ):
        status, schema, _ = await cloud.request("GET", f"/image/v2/schemas/metadefs/{path}", token=token)
        assert status == 200 and schema["name"] == name, (path, schema)
    status, schema, _ = await cloud.request("GET", "/image/v2/schemas/metadefs/namespace", token=token)
    assert schema["required"] == ["namespace"] and schema["additionalProperties"] is False
    status, schema, _ = await cloud.request("GET", "/image/v2/schemas/metadefs/namespaces", token=token)
    assert schema["properties"]["namespaces"]["items"]["name"] == "namespace" and "definitions" in schema


async def test_the_openstack_cli_manages_namespaces(cloud: Cloud) -> None:
    name = unique("ns")
    created = await asyncio.to_thread(
        cloud.openstack, "image", "metadef", "namespace", "create", "--public", "--description", "cli", name
    )
    try:
        assert created["namespace"] == name
        shown = await asyncio.to_thread(cloud.openstack, "image", "metadef", "namespace", "show", name)
        assert shown["namespace"] == name and shown["description"] == "cli"
        listed = await asyncio.to_thread(cloud.openstack, "image", "metadef", "namespace", "list")
        assert name in {n["namespace"] for n in listed}
        types = await asyncio.to_thread(cloud.openstack, "image", "metadef", "resource", "type", "list")
        assert "OS::Glance::Image" in {t["Name"] for t in types}
        await asyncio.to_thread(
            cloud.openstack,
            "image",
            "metadef",
            "property",
            "create",
            "--title",
            "Cores",
            "--type",
            "integer",
            "--schema",
            '{"minimum": 1}',
            "--name",
            "cores",
            name,
            fmt=None,
        )
        props = await asyncio.to_thread(cloud.openstack, "image", "metadef", "property", "list", name)
        assert "cores" in {p["name"] for p in props}
    finally:
        await asyncio.to_thread(cloud.openstack, "image", "metadef", "namespace", "delete", name, fmt=None)
    err = await asyncio.to_thread(cloud.openstack_fails, "image", "metadef", "namespace", "show", name)
    assert err.returncode != 0


async def test_a_name_with_control_characters_is_answered_whole(cloud: Cloud) -> None:
    """Its Location header carries the name percent-encoded (a raw control character would make
    the answer impossible to send)."""
    token = await cloud.token()
    name = f"ns\x1a{uuid.uuid4().hex[:6]}\U00073611"
    status, created, headers = await cloud.request("POST", NS, token=token, json={"namespace": name})
    try:
        assert status == 201 and created["namespace"] == name, created
        assert headers["Location"].endswith(
            "/image/v2/metadefs/namespaces/ns%1A" + name[3:9] + "%F1%B3%98%91"
        )
    finally:
        status, _, _ = await cloud.request("DELETE", f"{NS}/{quote(name, safe='')}", token=token)
        assert status == 204
