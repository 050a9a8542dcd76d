-- API keys. The secret is shown once at creation; only its SHA-256 is kept (the secret is 32
-- random bytes, so a fast hash is enough: there is nothing to brute-force).
CREATE TABLE jobq.api_keys (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role        text        NOT NULL CHECK (role IN ('client', 'ops', 'admin')),
    tenant      text        NOT NULL CHECK (length(tenant) BETWEEN 1 AND 100),
    key_hash    bytea       NOT NULL UNIQUE,
    -- The first characters of the token, to recognise a key in listings and logs.
    prefix      text        NOT NULL,
    -- Enqueue requests per second allowed to this key (per API process); NULL: server default.
    rate_limit  integer     CHECK (rate_limit > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- A revocation is seen by every process at once: their key caches listen on this channel.
CREATE FUNCTION jobq.notify_api_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobq_keys', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify
    AFTER UPDATE OR DELETE ON jobq.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_api_keys();
