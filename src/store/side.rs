//! What is kept beside the log: photos by content hash, the pool of sealed second-certificate
//! keys, and bulk lookups of stream versions for commands that touch many streams at once.

use std::collections::HashMap;

use hpki_events::vocabulary::Sealed;
use sqlx::Row;
use uuid::Uuid;

use super::{Db, Store, StoreError, postgres, sqlite};

/// A face photo as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPhoto {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A generated key pair waiting for a second certificate: its public half in clear, its
/// private half (PKCS#8 DER) sealed under the key-encryption key.
#[derive(Clone, Debug)]
pub struct PooledKey {
    pub key_id: Uuid,
    pub public_key: Vec<u8>,
    pub sealed: Sealed,
}

impl Store {
    /// The current version of each stream named (0 for one that does not exist).
    pub async fn stream_versions(
        &self,
        streams: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let streams: Vec<&str> = streams.iter().map(String::as_str).collect();
        Ok(match &self.db {
            Db::Sqlite(db) => {
                sqlite::stream_versions(&mut *db.pool.acquire().await?, &streams).await?
            }
            Db::Postgres(db) => {
                postgres::stream_versions(&mut *db.pool.acquire().await?, &streams).await?
            }
        })
    }

    /// Stores a photo under its SHA-256 (hex); storing the same bytes again does nothing.
    pub async fn put_photo(
        &self,
        sha256: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(db) => {
                sqlx::query(
                    "INSERT INTO photos (sha256, media_type, bytes) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(sha256)
                .bind(media_type)
                .bind(bytes)
                .execute(&db.pool)
                .await?;
            }
            Db::Postgres(db) => {
                sqlx::query(
                    "INSERT INTO photos (sha256, media_type, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(sha256)
                .bind(media_type)
                .bind(bytes)
                .execute(&db.pool)
                .await?;
            }
        }
        Ok(())
    }

    pub async fn photo(&self, sha256: &str) -> Result<Option<StoredPhoto>, StoreError> {
        let row = match &self.db {
            Db::Sqlite(db) => {
                sqlx::query_as::<_, (String, Vec<u8>)>(
                    "SELECT media_type, bytes FROM photos WHERE sha256 = ?1",
                )
                .bind(sha256)
                .fetch_optional(&db.pool)
                .await?
            }
            Db::Postgres(db) => {
                sqlx::query_as::<_, (String, Vec<u8>)>(
                    "SELECT media_type, bytes FROM photos WHERE sha256 = $1",
                )
                .bind(sha256)
                .fetch_optional(&db.pool)
                .await?
            }
        };
        Ok(row.map(|(media_type, bytes)| StoredPhoto { media_type, bytes }))
    }

    /// Adds generated keys to the pool, in one transaction.
    pub async fn add_keys(&self, keys: &[PooledKey]) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(db) => {
                let mut tx = db.pool.begin().await?;
                for key in keys {
                    sqlx::query(
                        "INSERT INTO second_keys (key_id, public_key, kek, sealed)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .bind(key.key_id.to_string())
                    .bind(&key.public_key)
                    .bind(&key.sealed.kek)
                    .bind(&key.sealed.data)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Db::Postgres(db) => {
                let ids: Vec<Uuid> = keys.iter().map(|k| k.key_id).collect();
                let public: Vec<&[u8]> = keys.iter().map(|k| &k.public_key[..]).collect();
                let kek: Vec<&str> = keys.iter().map(|k| &k.sealed.kek[..]).collect();
                let sealed: Vec<&str> = keys.iter().map(|k| &k.sealed.data[..]).collect();
                sqlx::query(
                    "INSERT INTO second_keys (key_id, public_key, kek, sealed)
                     SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[])",
                )
                .bind(ids)
                .bind(public)
                .bind(kek)
                .bind(sealed)
                .execute(&db.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Takes up to `n` unclaimed keys out of the pool: each is handed out once, whatever
    /// runs at the same time. A claimed key whose certificate never reaches the log is simply
    /// never used.
    pub async fn claim_keys(&self, n: i64) -> Result<Vec<(Uuid, Vec<u8>)>, StoreError> {
        match &self.db {
            Db::Sqlite(db) => {
                let rows = sqlx::query(
                    "UPDATE second_keys SET claimed = 1 WHERE key_id IN
                       (SELECT key_id FROM second_keys WHERE claimed = 0 LIMIT ?1)
                     RETURNING key_id, public_key",
                )
                .bind(n)
                .fetch_all(&db.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let id: String = row.try_get(0)?;
                        let id = Uuid::parse_str(&id)
                            .map_err(|e| StoreError::Scan(format!("key id {id:?}: {e}")))?;
                        Ok((id, row.try_get(1)?))
                    })
                    .collect()
            }
            Db::Postgres(db) => Ok(sqlx::query_as(
                "UPDATE second_keys SET claimed = true WHERE key_id IN
                   (SELECT key_id FROM second_keys WHERE NOT claimed LIMIT $1
                    FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, public_key",
            )
            .bind(n)
            .fetch_all(&db.pool)
            .await?),
        }
    }

    pub async fn unclaimed_keys(&self) -> Result<i64, StoreError> {
        Ok(match &self.db {
            Db::Sqlite(db) => {
                sqlx::query_scalar("SELECT count(*) FROM second_keys WHERE claimed = 0")
                    .fetch_one(&db.pool)
                    .await?
            }
            Db::Postgres(db) => {
                sqlx::query_scalar("SELECT count(*) FROM second_keys WHERE NOT claimed")
                    .fetch_one(&db.pool)
                    .await?
            }
        })
    }

    /// The sealed private key of a second certificate, for the signing platform.
    pub async fn sealed_key(&self, key_id: Uuid) -> Result<Option<Sealed>, StoreError> {
        let row: Option<(String, String)> = match &self.db {
            Db::Sqlite(db) => {
                sqlx::query_as("SELECT kek, sealed FROM second_keys WHERE key_id = ?1")
                    .bind(key_id.to_string())
                    .fetch_optional(&db.pool)
                    .await?
            }
            Db::Postgres(db) => {
                sqlx::query_as("SELECT kek, sealed FROM second_keys WHERE key_id = $1")
                    .bind(key_id)
                    .fetch_optional(&db.pool)
                    .await?
            }
        };
        Ok(row.map(|(kek, data)| Sealed { kek, data }))
    }
}

impl Store {
    /// One document of a read model.
    pub async fn doc(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<hpki_projections::Doc>, StoreError> {
        let row = match &self.db {
            Db::Sqlite(db) => sqlx::query(
                "SELECT key, list, sort_key, body FROM read_models
                 WHERE projection = ?1 AND key = ?2",
            )
            .bind(projection)
            .bind(key)
            .fetch_optional(&mut *db.models().await?)
            .await?
            .map(|row| sqlite::doc_row(&row))
            .transpose()?,
            Db::Postgres(db) => sqlx::query(
                "SELECT key, list, sort_key, body::text FROM read_models
                 WHERE projection = $1 AND key = $2",
            )
            .bind(projection)
            .bind(key)
            .fetch_optional(&db.pool)
            .await?
            .map(|row| postgres::doc_row(&row))
            .transpose()?,
        };
        Ok(row.map(|(_, doc)| doc))
    }

    /// How many documents of a read model are on each list.
    pub async fn doc_counts(&self, projection: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(match &self.db {
            Db::Sqlite(db) => {
                sqlx::query_as(
                    "SELECT list, count(*) FROM read_models WHERE projection = ?1
                     GROUP BY list ORDER BY list",
                )
                .bind(projection)
                .fetch_all(&mut *db.models().await?)
                .await?
            }
            Db::Postgres(db) => {
                sqlx::query_as(
                    "SELECT list, count(*) FROM read_models WHERE projection = $1
                     GROUP BY list ORDER BY list",
                )
                .bind(projection)
                .fetch_all(&db.pool)
                .await?
            }
        })
    }
}

/// The fields staff search applications by.
const SEARCHED: [&str; 7] = [
    "name_kanji",
    "name_kana",
    "name_romaji",
    "registry_number",
    "subscriber_id",
    "card_certificate",
    "second_certificate",
];

impl Store {
    /// Documents of `projection` with `needle` inside one of the searched fields, ignoring
    /// spaces (half- and full-width) and, for Latin letters, case. `%` and `_` are matched as
    /// themselves.
    pub async fn search_docs(
        &self,
        projection: &str,
        needle: &str,
        limit: i64,
    ) -> Result<Vec<(String, hpki_projections::Doc)>, StoreError> {
        let squeezed: String = needle
            .chars()
            .filter(|c| *c != ' ' && *c != '\u{3000}')
            .flat_map(char::to_lowercase)
            .collect();
        let pattern = format!(
            "%{}%",
            squeezed
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let field = |extract: &dyn Fn(&str) -> String| {
            SEARCHED
                .iter()
                .map(|f| {
                    format!(
                        "lower(replace(replace(coalesce({}, ''), ' ', ''), '\u{3000}', '')) LIKE {{p}} ESCAPE '\\'",
                        extract(f)
                    )
                })
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        match &self.db {
            Db::Sqlite(db) => {
                let condition =
                    field(&|f| format!("json_extract(body, '$.{f}')")).replace("{p}", "?2");
                // Built from the constant field names; the needle is bound.
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT key, list, sort_key, body FROM read_models
                     WHERE projection = ?1 AND ({condition}) ORDER BY sort_key LIMIT ?3"
                )))
                .bind(projection)
                .bind(&pattern)
                .bind(limit)
                .fetch_all(&mut *db.models().await?)
                .await?;
                rows.iter().map(sqlite::doc_row).collect()
            }
            Db::Postgres(db) => {
                let condition = field(&|f| format!("body->>'{f}'")).replace("{p}", "$2");
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT key, list, sort_key, body::text FROM read_models
                     WHERE projection = $1 AND ({condition}) ORDER BY sort_key LIMIT $3"
                )))
                .bind(projection)
                .bind(&pattern)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?;
                rows.iter().map(postgres::doc_row).collect()
            }
        }
    }
}

/// Runs one statement on either backend: written with `?N` placeholders, which PostgreSQL
/// reads as `$N`.
macro_rules! on_either {
    ($store:expr, $sql:expr, |$query:ident, $pool:ident| $body:expr) => {
        match &$store.db {
            Db::Sqlite(db) => {
                let $query: &'static str = $sql;
                let $pool = &db.pool;
                $body
            }
            Db::Postgres(db) => {
                // A constant statement with its placeholders renamed: no input reaches it.
                let $query = sqlx::AssertSqlSafe($sql.replace('?', "$"));
                let $pool = &db.pool;
                $body
            }
        }
    };
}

impl Store {
    /// The streams of a category (`staff` for `staff-…`), by name: read from the log's
    /// `(stream, version)` index, first versions only.
    pub async fn streams_of(&self, category: &str) -> Result<Vec<String>, StoreError> {
        // '.' follows '-': the range holds exactly the names starting `<category>-`.
        let (from, to) = (format!("{category}-"), format!("{category}."));
        Ok(on_either!(
            self,
            "SELECT stream FROM events WHERE stream >= ?1 AND stream < ?2 AND version = 1 ORDER BY stream",
            |sql, pool| {
                sqlx::query_scalar(sql)
                    .bind(&from)
                    .bind(&to)
                    .fetch_all(pool)
                    .await?
            }
        ))
    }
}

/// A staff credential as kept beside the log (migration 0005): `kind` is `password`,
/// `passkey`, `token` or `setup`; `secret` a PHC string, passkey JSON or SHA-256 hex.
pub struct StaffCredential<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub id: &'a str,
    pub secret: &'a str,
    /// Setup links: RFC 3339.
    pub expires_at: Option<&'a str>,
}

impl Store {
    /// Keeps a staff credential, replacing the one of the same name, kind and id.
    pub async fn put_staff_credential(&self, c: &StaffCredential<'_>) -> Result<(), StoreError> {
        on_either!(
            self,
            "INSERT INTO staff_credentials (name, kind, id, secret, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name, kind, id) DO UPDATE SET secret = excluded.secret, expires_at = excluded.expires_at",
            |sql, pool| {
                sqlx::query(sql)
                    .bind(c.name)
                    .bind(c.kind)
                    .bind(c.id)
                    .bind(c.secret)
                    .bind(c.expires_at)
                    .execute(pool)
                    .await?;
            }
        );
        Ok(())
    }

    /// Drops an account's credentials of a kind: the one with `id`, or all of them.
    pub async fn delete_staff_credentials(
        &self,
        name: &str,
        kind: &str,
        id: Option<&str>,
    ) -> Result<(), StoreError> {
        on_either!(
            self,
            "DELETE FROM staff_credentials WHERE name = ?1 AND kind = ?2 AND (?3 IS NULL OR id = ?3)",
            |sql, pool| {
                sqlx::query(sql)
                    .bind(name)
                    .bind(kind)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
        );
        Ok(())
    }

    /// An account's credentials of a kind: (id, secret), by id.
    pub async fn staff_credentials(
        &self,
        name: &str,
        kind: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_either!(
            self,
            "SELECT id, secret FROM staff_credentials WHERE name = ?1 AND kind = ?2 ORDER BY id",
            |sql, pool| {
                sqlx::query_as(sql)
                    .bind(name)
                    .bind(kind)
                    .fetch_all(pool)
                    .await?
            }
        ))
    }

    /// The credential of a kind whose secret is `secret`: (name, id, expires_at).
    pub async fn staff_credential_by_secret(
        &self,
        kind: &str,
        secret: &str,
    ) -> Result<Option<(String, String, Option<String>)>, StoreError> {
        Ok(on_either!(
            self,
            "SELECT name, id, expires_at FROM staff_credentials WHERE kind = ?1 AND secret = ?2",
            |sql, pool| {
                sqlx::query_as(sql)
                    .bind(kind)
                    .bind(secret)
                    .fetch_optional(pool)
                    .await?
            }
        ))
    }
}
