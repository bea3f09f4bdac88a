-- lorapki-server schema, version 2: the storage KEK's check value. Same dialect rules as version 1
-- (TEXT, BIGINT and BYTEA only), for SQLite and PostgreSQL alike.

-- Named values of the database itself. `kek_check`: a fixed label sealed (AES-256-GCM) under the
-- storage KEK at its first use on the database, so that a well-formed but different KEK is
-- refused at start-up and at import instead of failing every sealed value later.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
