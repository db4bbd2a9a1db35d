-- Beside the log, never in it: face photos (by content hash; events name the hash) and the
-- sealed private keys of second certificates (events name the key id). Rows here are only
-- ever added, and claimed once; which key belongs to which certificate is told by the log.
CREATE TABLE photos (
    sha256     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    bytes      BLOB NOT NULL
);

-- Keys are generated ahead of issuance (RSA-2048 generation is slow; signing is not) and
-- claimed one by one when a second certificate is issued.
CREATE TABLE second_keys (
    key_id     TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,   -- SubjectPublicKeyInfo, DER
    kek        TEXT NOT NULL,   -- the key-encryption key's id
    sealed     TEXT NOT NULL,   -- AES-256-GCM of the PKCS#8 DER, base64
    claimed    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX second_keys_unclaimed ON second_keys (claimed, key_id);
