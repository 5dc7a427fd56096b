"""First-run contents of a cloud: roles (and what they imply), the admin project and user (admin
on it and on the system), the built-in services of the catalog, the classic flavors.

Idempotent: run on every `actorstack up`; the admin password is (re)set from the environment,
as `keystone-manage bootstrap` does.
"""

from __future__ import annotations

import asyncpg

from api import catalog
from api.auth import hash_password, new_id

ADMIN_PROJECT = "admin"
ADMIN_USER = "admin"
ROLES = ("admin", "member", "reader")

# name: (ram MiB, vcpus, disk GiB): the classic table.
FLAVORS = {
    "m1.nano": (64, 1, 0),
    "m1.micro": (128, 1, 0),
    "m1.tiny": (512, 1, 1),
    "m1.small": (2048, 1, 20),
    "m1.medium": (4096, 2, 40),
    "m1.large": (8192, 4, 80),
    "m1.xlarge": (16384, 8, 160),
}
# Nova's own default flavors used ids "1".."5"; the two small test flavors follow devstack.
FLAVOR_IDS = {
    "m1.nano": "42",
    "m1.micro": "84",
    "m1.tiny": "1",
    "m1.small": "2",
    "m1.medium": "3",
    "m1.large": "4",
    "m1.xlarge": "5",
}


async def bootstrap(conn: asyncpg.Connection, admin_password: str) -> dict[str, str]:
    hashed = await hash_password(admin_password)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('actorstack bootstrap'))")
        for role in ROLES:
            await conn.execute(
                "INSERT INTO roles (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING", new_id(), role
            )
        # admin implies member implies reader, as keystone-manage bootstrap makes them.
        await conn.execute(
            "INSERT INTO implied_roles (prior_role_id, implied_role_id) "
            "SELECT p.id, i.id FROM roles p, roles i "
            "WHERE (p.name, i.name) IN (('admin', 'member'), ('member', 'reader')) "
            "AND p.domain_id IS NULL AND i.domain_id IS NULL ON CONFLICT DO NOTHING"
        )
        project_id = await conn.fetchval(
            "INSERT INTO projects (id, name, domain_id, description) "
            "VALUES ($1, $2, 'default', 'Bootstrap project') ON CONFLICT (domain_id, name) DO UPDATE "
            "SET enabled = true RETURNING id",
            new_id(),
            ADMIN_PROJECT,
        )
        user_id = await conn.fetchval(
            "INSERT INTO users (id, name, domain_id, password_hash, default_project_id) "
            "VALUES ($1, $2, 'default', $3, $4) ON CONFLICT (domain_id, name) DO UPDATE "
            "SET password_hash = EXCLUDED.password_hash, enabled = true RETURNING id",
            new_id(),
            ADMIN_USER,
            hashed,
            project_id,
        )
        # The admin role on the admin project and on the system, as keystone-manage bootstrap.
        await conn.execute(
            "INSERT INTO role_assignments (user_id, project_id, role_id) "
            "SELECT $1, $2, id FROM roles WHERE name = 'admin' AND domain_id IS NULL "
            "ON CONFLICT DO NOTHING",
            user_id,
            project_id,
        )
        await conn.execute(
            "INSERT INTO role_assignments (user_id, system, role_id) "
            "SELECT $1, true, id FROM roles WHERE name = 'admin' AND domain_id IS NULL "
            "ON CONFLICT DO NOTHING",
            user_id,
        )
        # The cloud's own services, built into the catalog (api/identity/catalog.py).
        await conn.executemany(
            "INSERT INTO services (id, type, name, built_in) VALUES ($1, $2, $3, true) ON CONFLICT DO "
            "NOTHING",
            [(s["id"], s["type"], s["name"]) for s in catalog.services("")],
        )
        for name, (ram, vcpus, disk) in FLAVORS.items():
            await conn.execute(
                "INSERT INTO flavors (id, name, ram, vcpus, disk) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT DO NOTHING",
                FLAVOR_IDS[name],
                name,
                ram,
                vcpus,
                disk,
            )
    return {"project_id": project_id, "user_id": user_id}


def openrc(base_url: str, password: str) -> str:
    """The environment that points the `openstack` CLI at this cloud as its admin."""
    return "\n".join(
        [
            f"export OS_AUTH_URL={base_url}/identity/v3",
            "export OS_IDENTITY_API_VERSION=3",
            f"export OS_USERNAME={ADMIN_USER}",
            f"export OS_PASSWORD={password}",
            f"export OS_PROJECT_NAME={ADMIN_PROJECT}",
            "export OS_USER_DOMAIN_NAME=Default",
            "export OS_PROJECT_DOMAIN_NAME=Default",
            "export OS_REGION_NAME=RegionOne",
        ]
    )


def clouds_yaml(base_url: str, password: str, name: str = "actorstack") -> str:
    """A clouds.yaml entry (for `openstack --os-cloud actorstack` and openstacksdk)."""
    return "\n".join(
        [
            "clouds:",
            f"  {name}:",
            "    auth:",
            f"      auth_url: {base_url}/identity/v3",
            f"      username: {ADMIN_USER}",
            f"      password: {password}",
            f"      project_name: {ADMIN_PROJECT}",
            "      user_domain_name: Default",
            "      project_domain_name: Default",
            "    region_name: RegionOne",
            "    identity_api_version: 3",
        ]
    )
