-- Beside the log, never in it: face photos (by content hash; events name the hash) and the
-- sealed private keys of second certificates (events name the key id). Rows here are only
-- ever added, and claimed once; which key belongs to which certificate is told by the log.
CREATE TABLE photos (
    sha256     text PRIMARY KEY,
    media_type text NOT NULL,
    bytes      bytea NOT NULL
);

-- Keys are generated ahead of issuance (RSA-2048 generation is slow; signing is not) and
-- claimed one by one when a second certificate is issued.
CREATE TABLE second_keys (
    key_id     uuid PRIMARY KEY,
    public_key bytea NOT NULL,   -- SubjectPublicKeyInfo, DER
    kek        text NOT NULL,    -- the key-encryption key's id
    sealed     text NOT NULL,    -- AES-256-GCM of the PKCS#8 DER, base64
    claimed    boolean NOT NULL DEFAULT false
);
CREATE INDEX second_keys_unclaimed ON second_keys (key_id) WHERE NOT claimed;
