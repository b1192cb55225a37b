-- floodway schema for PostgreSQL, version 5: API tokens (stored hashed), bound to a tenant or
-- admin. Mirrors migrations/sqlite/0005.

CREATE TABLE tokens (
    id           text PRIMARY KEY,      -- public prefix, shown in listings
    secret_hash  text NOT NULL UNIQUE,  -- sha256 of the whole token
    tenant       text,                  -- NULL with admin
    admin        boolean NOT NULL DEFAULT false,
    label        text,
    created_at   double precision NOT NULL,
    last_used_at double precision,
    revoked_at   double precision
);
