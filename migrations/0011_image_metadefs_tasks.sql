-- Image metadata definitions (Glance's metadefs: namespaces, resource types and their
-- associations, objects, properties, tags) and Glance's tasks (image_tasks), owned by the API's
-- image service (api/image/metadefs/, api/image/tasks.py, api/image/importer.py).

-- Metadata definitions (Glance's metadefs; owned by the API's image service,
-- api/image/metadefs/): namespaces and the property definitions, objects, tags and resource-type
-- associations they hold, all deleted with their namespace.
CREATE TABLE metadef_namespaces (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text NOT NULL UNIQUE,
    display_name  text,
    description   text,
    visibility    text NOT NULL DEFAULT 'private' CHECK (visibility IN ('public', 'private')),
    protected     boolean NOT NULL DEFAULT false,
    owner         text NOT NULL,                     -- project id
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX metadef_namespaces_owner ON metadef_namespaces (owner);

-- The cloud's own resource types are protected (as Glance's loaded definitions make them); an
-- association naming a new one creates it.
CREATE TABLE metadef_resource_types (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    protected   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO metadef_resource_types (name, protected) VALUES
    ('OS::Glance::Image', true), ('OS::Cinder::Volume', true), ('OS::Nova::Flavor', true),
    ('OS::Nova::Server', true), ('OS::Nova::Aggregate', true);

CREATE TABLE metadef_namespace_resource_types (
    namespace_id       bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    resource_type_id   bigint NOT NULL REFERENCES metadef_resource_types (id),
    prefix             text,                         -- what the namespace's property names take on this type
    properties_target  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace_id, resource_type_id)
);

CREATE TABLE metadef_objects (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    description   text,
    required      jsonb,                             -- names of required properties
    properties    jsonb,                             -- name -> property definition
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace_id, name)
);

CREATE TABLE metadef_properties (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    definition    jsonb NOT NULL,                    -- title, type, enum, ... (a small JSON Schema)
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace_id, name)
);

CREATE TABLE metadef_tags (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX metadef_tags_name ON metadef_tags (namespace_id, lower(name));  -- case-insensitive, as Glance

-- Glance's tasks (owned by the API's image service: api/image/tasks.py, api/image/importer.py):
-- the legacy `import` tasks of /v2/tasks and the `api_image_import` task of each image import.
-- A task outlives its image, as in Glance.
CREATE TABLE image_tasks (
    id          text PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('import', 'api_image_import')),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'success', 'failure')),
    owner       text NOT NULL,                       -- project id
    input       jsonb,
    result      jsonb,
    message     text NOT NULL DEFAULT '',
    image_id    text,
    request_id  text,
    user_id     text,
    expires_at  timestamptz,                         -- set when the task ends
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()   -- a running task touches it (api/image/importer.py)
);
CREATE INDEX image_tasks_image ON image_tasks (image_id);
CREATE INDEX image_tasks_owner ON image_tasks (owner, created_at);
CREATE INDEX image_tasks_running ON image_tasks (updated_at) WHERE status IN ('pending', 'processing');
