//! `Hash`: a blob's name, the BLAKE3-256 of its bytes, printed as 64 lowercase hex characters.

use std::fmt;
use std::str::FromStr;

use crate::limits::HASH_BATCH_BYTES;

/// The BLAKE3-256 hash of a blob's bytes: its name in the store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; 32]);

impl Hash {
    /// Number of bytes in a hash.
    pub const BYTES: usize = 32;
    /// The smallest hash (all zero bytes); the start of the full hash range.
    pub const MIN: Hash = Hash([0; 32]);

    /// Hashes `bytes` with BLAKE3.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight bytes read big-endian: order-preserving, and what the index keys on.
    pub fn prefix_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Hash {
        Hash(*h.as_bytes())
    }
}

/// BLAKE3 over bytes that arrive in small pieces, such as a QUIC stream's (about one packet's
/// payload each). BLAKE3 hashes an update of a few hundred bytes one 1 KiB chunk at a time, far
/// slower than the several chunks at once its SIMD paths take, so pieces are gathered into
/// batches of `HASH_BATCH_BYTES` first; an update at least that long, arriving with nothing
/// gathered, is hashed in place.
#[derive(Clone, Default)]
pub struct StreamHasher {
    hasher: blake3::Hasher,
    batch: Vec<u8>,
}

impl StreamHasher {
    pub fn new() -> StreamHasher {
        StreamHasher::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.batch.is_empty() && data.len() >= HASH_BATCH_BYTES {
                self.hasher.update(data);
                return;
            }
            if self.batch.capacity() == 0 {
                self.batch.reserve_exact(HASH_BATCH_BYTES);
            }
            let take = (HASH_BATCH_BYTES - self.batch.len()).min(data.len());
            self.batch.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.batch.len() == HASH_BATCH_BYTES {
                self.hasher.update(&self.batch);
                self.batch.clear();
            }
        }
    }

    /// The hash of everything given so far; more may follow.
    pub fn finalize(&self) -> Hash {
        if self.batch.is_empty() {
            return Hash::from(self.hasher.finalize());
        }
        let mut hasher = self.hasher.clone();
        hasher.update(&self.batch);
        Hash::from(hasher.finalize())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        f.write_str(std::str::from_utf8(&out).expect("hex is ascii"))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// Why a string is not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    #[error("a hash is 64 hex characters, got {length_chars}")]
    WrongLength { length_chars: usize },
    #[error("character {index} of the hash is not a lowercase hex digit")]
    NotLowercaseHex { index: usize },
}

impl FromStr for Hash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Hash, HashParseError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(HashParseError::WrongLength {
                length_chars: s.chars().count(),
            });
        }
        let digit = |index: usize| match bytes[index] {
            c @ b'0'..=b'9' => Ok(c - b'0'),
            c @ b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(HashParseError::NotLowercaseHex { index }),
        };
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
        }
        Ok(Hash(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_hasher_names_bytes_as_blake3_does_however_they_are_cut() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let whole = Hash::of(&bytes);
        // Pieces around the batch size, smaller and larger, and a hash taken midway.
        for cut in [
            1,
            1200,
            HASH_BATCH_BYTES - 1,
            HASH_BATCH_BYTES,
            40_000,
            200_000,
        ] {
            let mut h = StreamHasher::new();
            for (i, piece) in bytes.chunks(cut).enumerate() {
                h.update(piece);
                let done = ((i + 1) * cut).min(bytes.len());
                if i == 3 {
                    assert_eq!(h.finalize(), Hash::of(&bytes[..done]), "cut {cut}, midway");
                }
            }
            assert_eq!(h.finalize(), whole, "cut {cut}");
        }
        assert_eq!(StreamHasher::new().finalize(), Hash::of(&[]));
    }

    #[test]
    fn display_parse_round_trip() {
        let h = Hash::of(b"cairn");
        let s = h.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, blake3::hash(b"cairn").to_hex().as_str());
        assert_eq!(s.parse::<Hash>(), Ok(h));
    }

    #[test]
    fn parse_rejects_bad_input() {
        let good = Hash::of(b"x").to_string();
        assert_eq!(
            "".parse::<Hash>(),
            Err(HashParseError::WrongLength { length_chars: 0 })
        );
        assert_eq!(
            good[..63].parse::<Hash>(),
            Err(HashParseError::WrongLength { length_chars: 63 })
        );
        let upper = good.to_uppercase();
        if upper != good {
            assert!(matches!(
                upper.parse::<Hash>(),
                Err(HashParseError::NotLowercaseHex { .. })
            ));
        }
        let mut bad = good.clone().into_bytes();
        bad[10] = b'g';
        assert_eq!(
            String::from_utf8(bad).unwrap().parse::<Hash>(),
            Err(HashParseError::NotLowercaseHex { index: 10 })
        );
        // 64 bytes but not 64 characters: multi-byte UTF-8 must not panic.
        let multibyte = format!("{}é", &good[..62]);
        assert!(multibyte.parse::<Hash>().is_err());
    }

    #[test]
    fn prefix_preserves_order() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[7] = 1;
        b[0] = 1;
        assert!(Hash(a).prefix_u64() < Hash(b).prefix_u64());
        assert!(Hash(a) < Hash(b));
    }
}
