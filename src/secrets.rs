//! The back office's own secrets: the key-encryption key that seals second-certificate private
//! keys and birth dates (AES-256-GCM), and the QR secret that derives registration tokens.
//! Both are 32 random bytes in a file (hex), created on first start in development.

use std::path::Path;

use hpki_events::vocabulary::Sealed;
use openssl::hash::{MessageDigest, hash};
use openssl::rand::rand_bytes;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("sealed data was made under key {0}, which this server does not hold")]
    UnknownKey(String),
    #[error("sealed data does not open: altered, or sealed for something else")]
    Tampered,
}

/// 32 secret bytes, never printed.
#[derive(Clone)]
pub struct Secret(Box<[u8; 32]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn random() -> Secret {
        let mut bytes = [0u8; 32];
        rand_bytes(&mut bytes).expect("the system's random source");
        Secret(Box::new(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// Reads the secret at `path`; when there is no file, makes one (mode 0600) and says so.
    pub fn load_or_generate(path: &Path) -> Result<(Secret, bool), SecretError> {
        let fail = |why: String| SecretError::File {
            path: path.display().to_string(),
            why,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| fail("not hex".into()))?
                    .try_into()
                    .map_err(|_| fail("not 32 bytes (64 hex digits)".into()))?;
                Ok((Secret(Box::new(bytes)), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = Secret::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                }
                write_private(
                    path,
                    format!("{}\n", hex::encode(secret.bytes())).as_bytes(),
                )
                .map_err(|e| fail(e.to_string()))?;
                Ok((secret, true))
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The key-encryption key. Sealed data names the key it was made under (the first 8 bytes of
/// the key's SHA-256, hex), so a key can be rotated while older data stays readable.
#[derive(Clone, Debug)]
pub struct Kek {
    secret: Secret,
    id: String,
}

const NONCE: usize = 12;
const TAG: usize = 16;

impl Kek {
    pub fn new(secret: Secret) -> Kek {
        let digest = hash(MessageDigest::sha256(), secret.bytes()).expect("SHA-256");
        Kek {
            id: hex::encode(&digest[..8]),
            secret,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain`; `context` (what the data is and whose) is authenticated but not stored,
    /// so sealed data moved to another record does not open.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE];
        rand_bytes(&mut nonce).expect("the system's random source");
        let mut tag = [0u8; TAG];
        let cipher = encrypt_aead(
            Cipher::aes_256_gcm(),
            self.secret.bytes(),
            Some(&nonce),
            context.as_bytes(),
            plain,
            &mut tag,
        )
        .expect("AES-256-GCM with a 32-byte key and 12-byte nonce");
        let mut data = Vec::with_capacity(NONCE + cipher.len() + TAG);
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&cipher);
        data.extend_from_slice(&tag);
        Sealed {
            kek: self.id.clone(),
            data: openssl::base64::encode_block(&data),
        }
    }

    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        if sealed.kek != self.id {
            return Err(SecretError::UnknownKey(sealed.kek.clone()));
        }
        let data =
            openssl::base64::decode_block(&sealed.data).map_err(|_| SecretError::Tampered)?;
        if data.len() < NONCE + TAG {
            return Err(SecretError::Tampered);
        }
        let (nonce, rest) = data.split_at(NONCE);
        let (cipher, tag) = rest.split_at(rest.len() - TAG);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            self.secret.bytes(),
            Some(nonce),
            context.as_bytes(),
            cipher,
            tag,
        )
        .map_err(|_| SecretError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_in_its_context_and_unaltered() {
        let kek = Kek::new(Secret::random());
        let sealed = kek.seal("birth-date/1", b"19900317");
        assert!(!sealed.data.contains("19900317"));
        assert_eq!(kek.open("birth-date/1", &sealed).unwrap(), b"19900317");
        assert!(matches!(
            kek.open("birth-date/2", &sealed),
            Err(SecretError::Tampered)
        ));
        let mut altered = sealed.clone();
        let mut bytes = openssl::base64::decode_block(&altered.data).unwrap();
        bytes[NONCE] ^= 1;
        altered.data = openssl::base64::encode_block(&bytes);
        assert!(matches!(
            kek.open("birth-date/1", &altered),
            Err(SecretError::Tampered)
        ));
        let other = Kek::new(Secret::random());
        assert!(matches!(
            other.open("birth-date/1", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
        // The same plaintext seals differently each time (fresh nonce).
        assert_ne!(kek.seal("x", b"a").data, kek.seal("x", b"a").data);
    }

    #[test]
    fn secrets_are_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/kek.hex");
        let (first, made) = Secret::load_or_generate(&path).unwrap();
        assert!(made);
        let (again, made) = Secret::load_or_generate(&path).unwrap();
        assert!(!made);
        assert_eq!(first.bytes(), again.bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{first:?}"), "Secret(..)");
        std::fs::write(&path, "abcd").unwrap();
        let err = Secret::load_or_generate(&path).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }
}
