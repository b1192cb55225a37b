-- floodway schema, version 5: API tokens (stored hashed), bound to a tenant or admin.

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,      -- public prefix, shown in listings
    secret_hash TEXT NOT NULL UNIQUE,  -- sha256 of the whole token
    tenant      TEXT,                  -- NULL with admin = 1
    admin       INTEGER NOT NULL DEFAULT 0,
    label       TEXT,
    created_at  REAL NOT NULL,
    last_used_at REAL,
    revoked_at  REAL
);
