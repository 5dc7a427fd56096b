"""/identity/v3/domains/{id}/config and /domains/config/default: Keystone's domain-specific
configuration.

As Keystone, a domain may override the whitelisted options of two groups, `identity` and `ldap`
(the ldap password is accepted but never shown); anything else is refused. The defaults are
Keystone's own. This cloud stores users in its database whatever a domain's configuration says:
the options are kept and answered, as the API promises, not acted on.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Forbidden, NotFound
from api.identity import policy
from api.identity.views import get_or_404

# Keystone's defaults for the options a domain may set (keystone.conf's [identity] and [ldap]).
DEFAULTS: dict[str, dict[str, Any]] = {
    "identity": {"driver": "sql", "list_limit": None},
    "ldap": {
        "url": "ldap://localhost",
        "user": None,
        "suffix": "cn=example,cn=com",
        "query_scope": "one",
        "page_size": 0,
        "alias_dereferencing": "default",
        "debug_level": None,
        "chase_referrals": None,
        "user_tree_dn": None,
        "user_filter": None,
        "user_objectclass": "inetOrgPerson",
        "user_id_attribute": "cn",
        "user_name_attribute": "sn",
        "user_mail_attribute": "mail",
        "user_description_attribute": "description",
        "user_pass_attribute": "userPassword",
        "user_enabled_attribute": "enabled",
        "user_enabled_invert": False,
        "user_enabled_mask": 0,
        "user_enabled_default": "True",
        "user_attribute_ignore": ["default_project_id"],
        "user_default_project_id_attribute": None,
        "user_enabled_emulation": False,
        "user_enabled_emulation_dn": None,
        "user_enabled_emulation_use_group_config": False,
        "user_additional_attribute_mapping": [],
        "group_tree_dn": None,
        "group_filter": None,
        "group_objectclass": "groupOfNames",
        "group_id_attribute": "cn",
        "group_name_attribute": "ou",
        "group_members_are_ids": False,
        "group_member_attribute": "member",
        "group_desc_attribute": "description",
        "group_attribute_ignore": [],
        "group_additional_attribute_mapping": [],
        "tls_cacertfile": None,
        "tls_cacertdir": None,
        "use_tls": False,
        "tls_req_cert": "demand",
        "use_pool": True,
        "pool_size": 10,
        "pool_retry_max": 3,
        "pool_retry_delay": 0.1,
        "pool_connection_timeout": -1,
        "pool_connection_lifetime": 600,
        "use_auth_pool": True,
        "auth_pool_size": 100,
        "auth_pool_connection_lifetime": 60,
    },
}
SENSITIVE = {"ldap": {"password"}}


def _check_group(group: str) -> None:
    if group not in DEFAULTS:
        raise Forbidden(f"Invalid domain specific configuration: Group {group} is not supported")


def _check_option(group: str, option: str) -> None:
    _check_group(group)
    if option not in DEFAULTS[group] and option not in SENSITIVE.get(group, set()):
        raise Forbidden(
            f"Invalid domain specific configuration: Option {option} in group {group} is not supported"
        )


def _config_body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or not data["config"]:
        raise BadRequest("Expecting to find config in request body.")
    return data["config"]


def _groups(config: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(group, option, value) of a whole configuration, each checked against the whitelist."""
    rows = []
    for group, options in config.items():
        if not isinstance(options, dict) or not options:
            raise BadRequest(
                f"Invalid domain specific configuration: group {group} must be a non-empty object"
            )
        for option, value in options.items():
            _check_option(group, option)
            rows.append((group, option, value))
    return rows


async def _stored(conn: Any, domain_id: str, group: str | None = None) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT group_name, option, value FROM domain_configs WHERE domain_id = $1 "
        "AND ($2::text IS NULL OR group_name = $2) ORDER BY group_name, option",
        domain_id,
        group,
    )
    config: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["option"] in SENSITIVE.get(row["group_name"], set()):
            continue
        config.setdefault(row["group_name"], {})[row["option"]] = row["value"]
    return config


async def _domain(conn: Any, request: web.Request, *, change: bool) -> str:
    me = caller(request)
    if change:
        policy.require_admin(me, "update_domain_config")
    else:
        policy.require_reader(me, "get_domain_config")
    return (await get_or_404(conn, "domains", request.match_info["domain_id"], "domain"))["id"]


async def _has_config(conn: Any, domain_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM domain_configs WHERE domain_id = $1)", domain_id)
    )


def _not_found(domain_id: str, group: str | None = None, option: str | None = None) -> NotFound:
    where = f" group {group}" + (f" option {option}" if option else "") if group else ""
    return NotFound(f"Could not find Domain Config: {domain_id}{where}.")


async def _write(conn: Any, domain_id: str, rows: list[tuple[str, str, Any]]) -> None:
    await conn.executemany(
        "INSERT INTO domain_configs (domain_id, group_name, option, value) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (domain_id, group_name, option) DO UPDATE SET value = EXCLUDED.value",
        [(domain_id, group, option, value) for group, option, value in rows],
    )


async def create_config(request: web.Request) -> web.Response:
    """PUT: the domain's whole configuration (201 when it had none, 200 when replaced)."""
    rows = _groups(_config_body(await json_body(request)))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        domain_id = await _domain(conn, request, change=True)
        existed = await _has_config(conn, domain_id)
        await conn.execute("DELETE FROM domain_configs WHERE domain_id = $1", domain_id)
        await _write(conn, domain_id, rows)
        config = await _stored(conn, domain_id)
    return json_response({"config": config}, status=200 if existed else 201)


async def update_config(request: web.Request) -> web.Response:
    """PATCH: options merged into the configuration (of one group, or one option of it)."""
    m = request.match_info
    group, option = m.get("group"), m.get("option")
    config = _config_body(await json_body(request))
    if option is not None:
        _check_option(group or "", option)
        if set(config) != {option}:
            raise BadRequest(f"Invalid domain specific configuration: the body must set option {option} only")
        rows = [(group or "", option, config[option])]
    else:
        if group is not None and set(config) != {group}:
            raise BadRequest(
                f"Invalid domain specific configuration: the body must configure group {group} only"
            )
        rows = _groups(config)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        domain_id = await _domain(conn, request, change=True)
        if not await _has_config(conn, domain_id):
            raise _not_found(domain_id)
        await _write(conn, domain_id, rows)
        stored = await _stored(conn, domain_id, group)
    return json_response({"config": stored})


async def get_config(request: web.Request) -> web.Response:
    m = request.match_info
    group, option = m.get("group"), m.get("option")
    if group is not None:
        _check_group(group)
    if option is not None:
        _check_option(group or "", option)
    async with ctx(request).pool.acquire() as conn:
        domain_id = await _domain(conn, request, change=False)
        config = await _stored(conn, domain_id, group)
    if not config:
        raise _not_found(domain_id, group)
    if option is None:
        return json_response({"config": config})
    value = config.get(group or "", {})
    if option not in value:
        raise _not_found(domain_id, group, option)
    return json_response({"config": {option: value[option]}})


async def delete_config(request: web.Request) -> web.Response:
    m = request.match_info
    group, option = m.get("group"), m.get("option")
    if group is not None:
        _check_group(group)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        domain_id = await _domain(conn, request, change=True)
        status = await conn.execute(
            "DELETE FROM domain_configs WHERE domain_id = $1 AND ($2::text IS NULL OR group_name = $2) "
            "AND ($3::text IS NULL OR option = $3)",
            domain_id,
            group,
            option,
        )
    if status == "DELETE 0":
        raise _not_found(domain_id, group, option)
    return web.Response(status=204)


async def defaults(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_domain_config_default")
    group, option = request.match_info.get("group"), request.match_info.get("option")
    if group is None:
        return json_response({"config": DEFAULTS})
    _check_group(group)
    if option is None:
        return json_response({"config": {group: DEFAULTS[group]}})
    _check_option(group, option)
    if option not in DEFAULTS[group]:
        raise NotFound(f"Could not find the default of option {option} in group {group}.")
    return json_response({"config": {option: DEFAULTS[group][option]}})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/domains/config/default", defaults)
    r.add_get("/identity/v3/domains/config/{group}/default", defaults)
    r.add_get("/identity/v3/domains/config/{group}/{option}/default", defaults)
    for path in (
        "/identity/v3/domains/{domain_id}/config",
        "/identity/v3/domains/{domain_id}/config/{group}",
        "/identity/v3/domains/{domain_id}/config/{group}/{option}",
    ):
        r.add_get(path, get_config)
        r.add_patch(path, update_config)
        r.add_delete(path, delete_config)
    r.add_put("/identity/v3/domains/{domain_id}/config", create_config)
