-- Block storage (Cinder's model): volumes, and the storage backends that hold them.
--
-- The volume actor owns `version`, `status`, `attach_status`, `attachment`, `size` after
-- creation, `backend`/`provider_location` (set from its backend's report), `target_size` and
-- `fault`. The API owns the rest and bumps `version` whenever it writes; besides creating the row
-- (status creating), it makes two guarded transitions itself, because the caller must learn at
-- once whether they won: available -> reserved (an attach, or a boot from this volume) and
-- in-use -> detaching (a detach), each followed in the same transaction by the messages that let
-- the actors carry on. No multiattach: a volume has at most one attachment, kept in its row, so
-- it can never be attached twice.

CREATE TABLE volume_backends (
    name               text PRIMARY KEY,              -- the storage agent's name (its queue: agent.<name>)
    driver             text NOT NULL,                 -- file (qcow2 files), later lvm, rbd …
    availability_zone  text NOT NULL DEFAULT 'nova',
    total_gb           integer NOT NULL CHECK (total_gb >= 0),
    allocated_gb       integer NOT NULL DEFAULT 0,
    enabled            boolean NOT NULL DEFAULT true,
    started_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE volumes (
    id                 text PRIMARY KEY,
    version            integer NOT NULL DEFAULT 1,
    project_id         text NOT NULL,
    user_id            text NOT NULL,
    name               text NOT NULL DEFAULT '',
    description        text NOT NULL DEFAULT '',
    size               integer NOT NULL CHECK (size > 0),          -- GiB
    status             text NOT NULL CHECK (status IN ('creating', 'available', 'reserved', 'attaching', 'in-use',
                           'detaching', 'deleting', 'error', 'error_deleting', 'extending', 'error_extending')),
    attach_status      text NOT NULL DEFAULT 'detached'
                           CHECK (attach_status IN ('detached', 'attaching', 'attached', 'detaching')),
    -- the one attachment: {"id", "server_id", "device", "host", "mode", "delete_on_termination",
    -- "attached_at"}; NULL when detached
    attachment         jsonb,
    bootable           boolean NOT NULL DEFAULT false,
    availability_zone  text NOT NULL DEFAULT 'nova',
    volume_type        text NOT NULL DEFAULT '__DEFAULT__',
    metadata           jsonb NOT NULL DEFAULT '{}',
    image_id           text,                                       -- created from this image
    image_metadata     jsonb NOT NULL DEFAULT '{}',                -- volume_image_metadata
    source_volid       text,
    snapshot_id        text,
    backend            text,                                       -- volume_backends.name
    provider_location  text,                                       -- the backend's handle (file backend: the path)
    format             text NOT NULL DEFAULT 'qcow2',
    target_size        integer,                                    -- extending: the size asked for
    fault              text,                                       -- why it is in an error state
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz
);
CREATE INDEX volumes_project ON volumes (project_id, created_at);
CREATE INDEX volumes_server ON volumes ((attachment->>'server_id')) WHERE attachment IS NOT NULL;
CREATE INDEX volumes_backend ON volumes (backend);

-- A server's volumes to create or attach at boot (block_device_mapping_v2 with a volume
-- destination), and whether its root disk is a volume.
ALTER TABLE servers ADD COLUMN block_devices jsonb NOT NULL DEFAULT '[]';
