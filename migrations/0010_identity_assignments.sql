-- Keystone's assignment model (owned by the API's identity service, api/identity/; a token's
-- roles are computed from it when the token is used, api/effective_roles.py):
-- groups and their members; role assignments to a user or a group on a project, a domain or
-- the system, or inherited to the projects below a domain or a project (OS-INHERIT);
-- domain-specific roles and role implications (admin implies member implies reader, as
-- `keystone-manage bootstrap` makes them); the project hierarchy; the attributes Keystone keeps
-- beside the known ones of users, projects and domains; domain tags; revocations of the tokens
-- of a project, a domain or the system.

CREATE TABLE groups (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    domain_id    text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    description  text NOT NULL DEFAULT '',
    extra        jsonb NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);

CREATE TABLE group_members (
    group_id  text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id   text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

ALTER TABLE roles
    ADD COLUMN domain_id text REFERENCES domains (id) ON DELETE CASCADE,
    ADD COLUMN description text,
    ADD COLUMN extra jsonb NOT NULL DEFAULT '{}',
    DROP CONSTRAINT roles_name_key;
CREATE UNIQUE INDEX roles_name ON roles (name, domain_id) NULLS NOT DISTINCT;

CREATE TABLE implied_roles (
    prior_role_id    text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    implied_role_id  text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id)
);
INSERT INTO implied_roles (prior_role_id, implied_role_id)
SELECT prior.id, implied.id FROM roles prior, roles implied
WHERE (prior.name, implied.name) IN (('admin', 'member'), ('member', 'reader'))
  AND prior.domain_id IS NULL AND implied.domain_id IS NULL;

ALTER TABLE role_assignments
    DROP CONSTRAINT role_assignments_pkey,
    ALTER COLUMN user_id DROP NOT NULL,
    ALTER COLUMN project_id DROP NOT NULL,
    ADD COLUMN group_id text REFERENCES groups (id) ON DELETE CASCADE,
    ADD COLUMN domain_id text REFERENCES domains (id) ON DELETE CASCADE,
    ADD COLUMN system boolean NOT NULL DEFAULT false,
    ADD COLUMN inherited boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT role_assignments_one_actor CHECK (num_nonnulls(user_id, group_id) = 1),
    ADD CONSTRAINT role_assignments_one_target CHECK (num_nonnulls(project_id, domain_id) + system::int = 1),
    ADD CONSTRAINT role_assignments_system_not_inherited CHECK (NOT (system AND inherited));
CREATE UNIQUE INDEX role_assignments_unique
    ON role_assignments (user_id, group_id, project_id, domain_id, system, role_id, inherited) NULLS NOT DISTINCT;
CREATE INDEX role_assignments_group ON role_assignments (group_id);
CREATE INDEX role_assignments_domain ON role_assignments (domain_id);
CREATE INDEX role_assignments_role ON role_assignments (role_id);

ALTER TABLE projects
    ADD COLUMN parent_id text REFERENCES projects (id) ON DELETE CASCADE,
    ADD COLUMN extra jsonb NOT NULL DEFAULT '{}';
CREATE INDEX projects_parent ON projects (parent_id);

ALTER TABLE users ADD COLUMN extra jsonb NOT NULL DEFAULT '{}';

ALTER TABLE domains
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN extra jsonb NOT NULL DEFAULT '{}';

ALTER TABLE token_revocations
    ADD COLUMN project_id text,
    ADD COLUMN domain_id text,
    ADD COLUMN system boolean NOT NULL DEFAULT false;
CREATE INDEX token_revocations_project ON token_revocations (project_id, revoked_at);
CREATE INDEX token_revocations_domain ON token_revocations (domain_id, revoked_at);
