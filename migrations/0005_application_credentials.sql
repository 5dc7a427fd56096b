-- Keystone's application credentials (api/identity/app_credentials.py): a user delegates some of
-- their roles on one project to an application, which authenticates with the credential's id (or
-- name) and a secret instead of the user's password. Only the secret's scrypt hash is kept.
-- A credential goes with its user and its project; tokens made from it carry its id, and stop
-- validating once its row is gone.
CREATE TABLE application_credentials (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    description   text,
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_hash   text NOT NULL,
    expires_at    timestamptz,                  -- NULL: never
    unrestricted  boolean NOT NULL DEFAULT false, -- may it manage application credentials itself
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);
CREATE INDEX application_credentials_project ON application_credentials (project_id);
-- The roles a credential delegates (a subset of its user's roles on its project when created; a
-- token gets those the user still holds there).
CREATE TABLE application_credential_roles (
    application_credential_id  text NOT NULL REFERENCES application_credentials (id) ON DELETE CASCADE,
    role_id                    text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (application_credential_id, role_id)
);
