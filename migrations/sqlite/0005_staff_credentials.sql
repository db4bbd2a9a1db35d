-- Staff credentials, beside the log and never in it (issue 7): the argon2id hash of each
-- password, each passkey as the WebAuthn verifier keeps it, the SHA-256 of each API token and
-- of each one-time setup link. The log records when each was made (Staff* events on
-- `staff-<name>`), never the secret or its hash, so exports carry none of them.
CREATE TABLE staff_credentials (
    name       TEXT NOT NULL,   -- the account
    kind       TEXT NOT NULL,   -- password | passkey | token | setup
    id         TEXT NOT NULL,   -- 'current' for the password; credential, token or link id
    secret     TEXT NOT NULL,   -- PHC string, passkey JSON, or SHA-256 hex
    expires_at TEXT,            -- setup links: RFC 3339
    PRIMARY KEY (name, kind, id)
);
CREATE INDEX staff_credentials_by_secret ON staff_credentials (kind, secret);
