"""Identity v3 (Keystone's API): tokens and catalog, projects, users, domains, roles, application
credentials."""

from aiohttp import web

from api.identity import app_credentials, projects, roles, tokens, users


def setup(app: web.Application) -> None:
    tokens.setup(app)
    projects.setup(app)
    users.setup(app)
    roles.setup(app)
    app_credentials.setup(app)
