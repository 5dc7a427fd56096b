"""Identity v3 (Keystone's API): tokens and catalog, domains, projects, users, groups, roles and
their grants, application credentials and their access rules, credentials (and OS-EC2), trusts
(OS-TRUST), endpoint groups (OS-EP-FILTER), policies, OAuth1 consumers, domain configuration."""

from aiohttp import web

from api.identity import (
    access_rules,
    app_credentials,
    assignments,
    catalog,
    credentials,
    domain_config,
    domains,
    endpoint_groups,
    grants,
    groups,
    oauth1,
    policies,
    projects,
    roles,
    tokens,
    trusts,
    users,
)


def setup(app: web.Application) -> None:
    tokens.setup(app)
    domain_config.setup(app)
    domains.setup(app)
    projects.setup(app)
    users.setup(app)
    groups.setup(app)
    roles.setup(app)
    grants.setup(app)
    assignments.setup(app)
    catalog.setup(app)
    endpoint_groups.setup(app)
    policies.setup(app)
    credentials.setup(app)
    trusts.setup(app)
    app_credentials.setup(app)
    access_rules.setup(app)
    oauth1.setup(app)
