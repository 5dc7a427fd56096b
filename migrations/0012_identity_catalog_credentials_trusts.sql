-- The rest of Keystone's resources (owned by the API's identity service, api/identity/):
-- regions, services and endpoints beside the built-in catalog (catalog.py), endpoint groups
-- (OS-EP-FILTER), policy blobs, credentials (/credentials and OS-EC2, blobs encrypted),
-- trusts (OS-TRUST), application credentials' access rules, OAuth1 consumers and domain-specific
-- configuration.

CREATE TABLE regions (
    id                text PRIMARY KEY,
    description       text NOT NULL DEFAULT '',
    parent_region_id  text REFERENCES regions (id) ON DELETE CASCADE,
    extra             jsonb NOT NULL DEFAULT '{}'
);
INSERT INTO regions (id) VALUES ('RegionOne');

CREATE TABLE services (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    name         text,
    description  text,
    enabled      boolean NOT NULL DEFAULT true,
    built_in     boolean NOT NULL DEFAULT false,
    extra        jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE endpoints (
    id          text PRIMARY KEY,
    service_id  text NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    interface   text NOT NULL CHECK (interface IN ('public', 'internal', 'admin')),
    url         text NOT NULL,
    region_id   text REFERENCES regions (id),
    enabled     boolean NOT NULL DEFAULT true,
    extra       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX endpoints_service ON endpoints (service_id);
CREATE INDEX endpoints_region ON endpoints (region_id);

CREATE TABLE endpoint_groups (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    description  text,
    filters      jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE policies (
    id     text PRIMARY KEY,
    type   text NOT NULL,
    blob   text NOT NULL,
    extra  jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE credentials (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id      text REFERENCES projects (id) ON DELETE CASCADE,
    type            text NOT NULL,
    encrypted_blob  text NOT NULL,
    extra           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX credentials_user ON credentials (user_id);

CREATE TABLE trusts (
    id                    text PRIMARY KEY,
    trustor_user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    trustee_user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id            text REFERENCES projects (id) ON DELETE CASCADE,
    impersonation         boolean NOT NULL,
    expires_at            timestamptz,
    remaining_uses        integer CHECK (remaining_uses >= 0),
    allow_redelegation    boolean NOT NULL DEFAULT false,
    redelegation_count    integer,
    redelegated_trust_id  text REFERENCES trusts (id) ON DELETE CASCADE,
    created_at            timestamptz NOT NULL DEFAULT now(),
    extra                 jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX trusts_trustor ON trusts (trustor_user_id);
CREATE INDEX trusts_trustee ON trusts (trustee_user_id);

CREATE TABLE trust_roles (
    trust_id  text NOT NULL REFERENCES trusts (id) ON DELETE CASCADE,
    role_id   text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (trust_id, role_id)
);

CREATE TABLE access_rules (
    id       text PRIMARY KEY,
    user_id  text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service  text NOT NULL,
    path     text NOT NULL,
    method   text NOT NULL,
    UNIQUE (user_id, service, path, method)
);

CREATE TABLE application_credential_access_rules (
    application_credential_id  text NOT NULL REFERENCES application_credentials (id) ON DELETE CASCADE,
    access_rule_id             text NOT NULL REFERENCES access_rules (id),
    PRIMARY KEY (application_credential_id, access_rule_id)
);
CREATE INDEX application_credential_access_rules_rule ON application_credential_access_rules (access_rule_id);

CREATE TABLE oauth_consumers (
    id           text PRIMARY KEY,
    description  text,
    secret_hash  text NOT NULL,
    extra        jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE domain_configs (
    domain_id   text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    group_name  text NOT NULL,
    option      text NOT NULL,
    value       jsonb,
    PRIMARY KEY (domain_id, group_name, option)
);
