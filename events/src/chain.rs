//! The hash chain: `hash(n) = SHA-256(hash(n-1) ‖ body(n))`, starting from 32 zero bytes.
//! A third party can recompute it with `sha256sum`; see `ops/verify-export.py`.

use sha2::{Digest, Sha256};

/// A link of the chain: the SHA-256 over the previous link and one event's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

/// The link before the first event.
pub const GENESIS_HASH: ChainHash = ChainHash([0; 32]);

impl ChainHash {
    pub fn next(&self, body: &[u8]) -> ChainHash {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(body);
        ChainHash(hasher.finalize().into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<ChainHash> {
        Some(ChainHash(bytes.try_into().ok()?))
    }

    pub fn from_hex(text: &str) -> Option<ChainHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(ChainHash(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for ChainHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256_of_previous_and_body() {
        // sha256 of 32 zero bytes followed by "abc", computed with `sha256sum`.
        let h = GENESIS_HASH.next(b"abc");
        assert_eq!(
            h.to_hex(),
            "365aa7d8f7f9402c4b9434502b4cc89ddb09fe50d7cd95b493b834c62d5a5370"
        );
        assert_ne!(h, GENESIS_HASH.next(b"abd"));
    }

    #[test]
    fn hex_round_trip() {
        let h = GENESIS_HASH.next(b"x");
        assert_eq!(ChainHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(ChainHash::from_hex("zz"), None);
    }
}
