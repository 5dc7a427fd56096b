"""Identity v3 (Keystone's API): tokens and catalog, domains, projects, users, groups, roles and
their grants, application credentials."""

from aiohttp import web

from api.identity import (
    app_credentials,
    assignments,
    catalog,
    domains,
    grants,
    groups,
    projects,
    roles,
    tokens,
    users,
)


def setup(app: web.Application) -> None:
    tokens.setup(app)
    domains.setup(app)
    projects.setup(app)
    users.setup(app)
    groups.setup(app)
    roles.setup(app)
    grants.setup(app)
    assignments.setup(app)
    catalog.setup(app)
    app_credentials.setup(app)
