-- lorapki-server schema, version 1. One schema for SQLite and PostgreSQL: only TEXT, BIGINT and
-- BYTEA columns (SQLite stores BYTEA values as blobs).

-- The device registry and the join server's per-device state.
CREATE TABLE devices (
    dev_eui            TEXT PRIMARY KEY,      -- 16 lowercase hex digits, MSB first
    join_eui           TEXT NOT NULL,
    mac_version        TEXT NOT NULL,         -- 1.0.0 .. 1.0.4, 1.1
    identity           BYTEA NOT NULL,        -- identity public key, SEC1 compressed (49 bytes)
    identity_source    TEXT NOT NULL,         -- raw | certificate
    server_key_id      TEXT,                  -- pinned server key id (hex); NULL = primary key
    key_state          TEXT NOT NULL,         -- factory | pending-new | active-new
    generation         BIGINT NOT NULL,       -- activations of new keys; 0 = factory keys
    active_keys        BYTEA NOT NULL,        -- sealed AppKey [‖ NwkKey] (AES-256-GCM)
    staged_keys        BYTEA,                 -- sealed new keys while pending
    dev_nonce_last     BIGINT NOT NULL,       -- highest DevNonce seen (-1 = none)
    dev_nonces_used    BYTEA,                 -- LoRaWAN <= 1.0.3: bitmap of used DevNonces
    join_nonce         BIGINT NOT NULL,       -- last JoinNonce issued (24-bit counter)
    last_join_slot     TEXT,                  -- active | staged: key of the last answered join
    last_join_dev_addr TEXT,                  -- DevAddr of that join (hex)
    version            BIGINT NOT NULL,       -- optimistic concurrency between instances
    created_ms         BIGINT NOT NULL,
    updated_ms         BIGINT NOT NULL
);

-- Protocol state per device (lorapki_proto::SessionSnapshot, sealed), so that any instance can
-- continue any device's exchange.
CREATE TABLE sessions (
    dev_eui     TEXT PRIMARY KEY,
    snapshot    BYTEA NOT NULL,
    version     BIGINT NOT NULL,
    pending     BIGINT NOT NULL,              -- 1 while a run is pending
    deadline_ms BIGINT,                       -- when the idle timer needs the device
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX sessions_deadline ON sessions (deadline_ms);

-- Key events (no key material): staged, activated, retired, rolled-back.
CREATE TABLE key_history (
    dev_eui    TEXT NOT NULL,
    generation BIGINT NOT NULL,
    event      TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX key_history_dev_eui ON key_history (dev_eui);
