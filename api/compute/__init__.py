"""Compute v2.1 (Nova's API) under /compute/v2.1.

Every request there is first given its microversion (microversion.py: a middleware this setup
adds to the app, innermost), which handlers read with `microversion.requested(request)`.
"""

from aiohttp import web

from api.compute import (
    aggregates,
    flavor_access,
    flavor_extra_specs,
    flavors,
    hosts,
    hypervisors,
    instance_actions,
    keypairs,
    limits,
    microversion,
    migrations,
    quota_classes,
    quotas,
    security_groups,
    server_groups,
    server_metadata,
    server_networks,
    server_password,
    server_security_groups,
    server_tags,
    server_volumes,
    servers,
    tenant_usage,
    usage_audit_log,
)


def setup(app: web.Application) -> None:
    microversion.setup(app)
    flavors.setup(app)
    flavor_extra_specs.setup(app)
    flavor_access.setup(app)
    keypairs.setup(app)
    quotas.setup(app)
    limits.setup(app)
    instance_actions.setup(app)
    servers.setup(app)
    server_metadata.setup(app)
    server_networks.setup(app)
    server_tags.setup(app)
    server_volumes.setup(app)
    server_groups.setup(app)
    security_groups.setup(app)
    server_security_groups.setup(app)
    hosts.setup(app)
    hypervisors.setup(app)
    aggregates.setup(app)
    migrations.setup(app)
    quota_classes.setup(app)
    server_password.setup(app)
    tenant_usage.setup(app)
    usage_audit_log.setup(app)
