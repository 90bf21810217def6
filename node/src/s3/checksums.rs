//! S3's additional checksums (`x-amz-checksum-*`): the algorithms, the hashers that compute
//! them, a multipart object's checksum (composite, or for the CRCs a full-object one combined
//! from the parts'), and how they are written into answers. Pure functions.

use s3s::checksum::ChecksumHasher;
use s3s::dto;
use s3s::{S3Result, s3_error};

use super::records::{Checksum, ChecksumAlgorithm, ChecksumKind};

pub const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

impl ChecksumAlgorithm {
    /// The name S3 gives it in `x-amz-checksum-algorithm` (`CRC32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    pub fn parse(name: &str) -> S3Result<Self> {
        ALGORITHMS
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| s3_error!(InvalidRequest, "unknown checksum algorithm {name:?}"))
    }

    /// Its header, `x-amz-checksum-crc32` and so on.
    pub fn header(self) -> String {
        format!("x-amz-checksum-{}", self.name().to_ascii_lowercase())
    }

    fn is_crc(self) -> bool {
        !matches!(self, ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256)
    }
}

/// A hasher computing the given algorithms.
pub fn hasher(algorithms: impl IntoIterator<Item = ChecksumAlgorithm>) -> ChecksumHasher {
    let mut h = ChecksumHasher::default();
    for a in algorithms {
        match a {
            ChecksumAlgorithm::Crc32 => h.crc32 = Some(Default::default()),
            ChecksumAlgorithm::Crc32c => h.crc32c = Some(Default::default()),
            ChecksumAlgorithm::Crc64nvme => h.crc64nvme = Some(Default::default()),
            ChecksumAlgorithm::Sha1 => h.sha1 = Some(Default::default()),
            ChecksumAlgorithm::Sha256 => h.sha256 = Some(Default::default()),
        }
    }
    h
}

/// The base64 value of one algorithm in a computed `dto::Checksum`.
pub fn value_of(sums: &dto::Checksum, algorithm: ChecksumAlgorithm) -> Option<&String> {
    match algorithm {
        ChecksumAlgorithm::Crc32 => sums.checksum_crc32.as_ref(),
        ChecksumAlgorithm::Crc32c => sums.checksum_crc32c.as_ref(),
        ChecksumAlgorithm::Crc64nvme => sums.checksum_crc64nvme.as_ref(),
        ChecksumAlgorithm::Sha1 => sums.checksum_sha1.as_ref(),
        ChecksumAlgorithm::Sha256 => sums.checksum_sha256.as_ref(),
    }
}

/// The kind a multipart upload's checksum takes: as asked, or S3's default (full-object for
/// CRC64NVME, composite for the rest). SHA checksums cannot be full-object and CRC64NVME
/// cannot be composite, as in S3.
pub fn upload_kind(algorithm: ChecksumAlgorithm, asked: Option<&str>) -> S3Result<ChecksumKind> {
    let kind = match asked {
        None if algorithm == ChecksumAlgorithm::Crc64nvme => ChecksumKind::FullObject,
        None => ChecksumKind::Composite,
        Some(t) if t.eq_ignore_ascii_case("FULL_OBJECT") => ChecksumKind::FullObject,
        Some(t) if t.eq_ignore_ascii_case("COMPOSITE") => ChecksumKind::Composite,
        Some(t) => return Err(s3_error!(InvalidRequest, "unknown checksum type {t:?}")),
    };
    match (algorithm.is_crc(), kind, algorithm) {
        (false, ChecksumKind::FullObject, _)
        | (_, ChecksumKind::Composite, ChecksumAlgorithm::Crc64nvme) => Err(s3_error!(
            InvalidRequest,
            "The {} checksum type cannot be used with the {} checksum algorithm.",
            kind_name(kind),
            algorithm.name().to_ascii_lowercase()
        )),
        _ => Ok(kind),
    }
}

pub fn kind_name(kind: ChecksumKind) -> &'static str {
    match kind {
        ChecksumKind::FullObject => "FULL_OBJECT",
        ChecksumKind::Composite => "COMPOSITE",
    }
}

/// A multipart object's checksum from its parts' (base64) checksums and lengths, in order.
pub fn of_parts(
    algorithm: ChecksumAlgorithm,
    kind: ChecksumKind,
    parts: &[(String, u64)],
) -> S3Result<Checksum> {
    let decoded: Vec<Vec<u8>> = parts
        .iter()
        .map(|(v, _)| base64_simd::STANDARD.decode_to_vec(v.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| s3_error!(InternalError, "a part's stored checksum is not base64"))?;
    let value = match kind {
        ChecksumKind::Composite => {
            let mut h = hasher([algorithm]);
            for d in &decoded {
                h.update(d);
            }
            let whole = h.finalize();
            let v = value_of(&whole, algorithm).expect("the hasher computes its algorithm");
            format!("{v}-{}", parts.len())
        }
        ChecksumKind::FullObject => {
            let crc = Crc::of(algorithm)
                .ok_or_else(|| s3_error!(InvalidRequest, "a SHA checksum cannot be full-object"))?;
            // The CRC of no bytes is 0 for these CRCs.
            let mut whole = 0;
            for (d, (_, len)) in decoded.iter().zip(parts) {
                let part = crc.read(d).ok_or_else(|| {
                    s3_error!(
                        InternalError,
                        "a part's stored checksum has the wrong length"
                    )
                })?;
                whole = crc.combine(whole, part, *len);
            }
            base64_simd::STANDARD.encode_to_string(crc.write(whole))
        }
    };
    Ok(Checksum {
        algorithm,
        kind,
        value,
    })
}

/// A reflected CRC whose initial value and final xor are all ones (CRC32, CRC32C, CRC64NVME),
/// for combining: crc(A‖B) from crc(A), crc(B) and B's length, as zlib's `crc32_combine`.
struct Crc {
    /// The polynomial, bit-reversed.
    poly: u64,
    width: u32,
}

impl Crc {
    fn of(algorithm: ChecksumAlgorithm) -> Option<Crc> {
        let (poly, width) = match algorithm {
            ChecksumAlgorithm::Crc32 => (0xedb8_8320, 32),
            ChecksumAlgorithm::Crc32c => (0x82f6_3b78, 32),
            ChecksumAlgorithm::Crc64nvme => (0x9a6c_9329_ac4b_c9b5, 64),
            _ => return None,
        };
        Some(Crc { poly, width })
    }

    fn read(&self, bytes: &[u8]) -> Option<u64> {
        if bytes.len() * 8 != self.width as usize {
            return None;
        }
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn write(&self, value: u64) -> Vec<u8> {
        value.to_be_bytes()[8 - self.width as usize / 8..].to_vec()
    }

    /// x^0 in the reflected representation.
    fn one(&self) -> u64 {
        1 << (self.width - 1)
    }

    /// a·b mod P.
    fn multiply(&self, a: u64, mut b: u64) -> u64 {
        let mut m = self.one();
        let mut product = 0;
        while m != 0 {
            if a & m != 0 {
                product ^= b;
            }
            m >>= 1;
            b = if b & 1 != 0 {
                (b >> 1) ^ self.poly
            } else {
                b >> 1
            };
        }
        product
    }

    /// x^(8·len) mod P.
    fn shift_of(&self, len: u64) -> u64 {
        let mut power = self.one() >> 8; // x^8
        let mut result = self.one();
        let mut n = len;
        while n != 0 {
            if n & 1 != 0 {
                result = self.multiply(power, result);
            }
            power = self.multiply(power, power);
            n >>= 1;
        }
        result
    }

    fn combine(&self, crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
        self.multiply(self.shift_of(len_b), crc_a) ^ crc_b
    }
}

/// Writes a checksum into an answer's `checksum_*` fields (the outputs of PutObject, GetObject,
/// HeadObject and CompleteMultipartUpload name them alike), and its type; `values` writes only
/// the values (UploadPart's and UploadPartCopy's answers have no type).
macro_rules! answer_checksum {
    ($output:expr, $checksum:expr) => {{
        if let Some(c) = $checksum {
            $crate::s3::checksums::answer_checksum!($output, values Some(c));
            $output.checksum_type = Some(s3s::dto::ChecksumType::from(
                $crate::s3::checksums::kind_name(c.kind).to_string(),
            ));
        }
    }};
    ($output:expr, values $checksum:expr) => {{
        if let Some(c) = $checksum {
            use $crate::s3::records::ChecksumAlgorithm as A;
            let value = Some(c.value.clone());
            match c.algorithm {
                A::Crc32 => $output.checksum_crc32 = value,
                A::Crc32c => $output.checksum_crc32c = value,
                A::Crc64nvme => $output.checksum_crc64nvme = value,
                A::Sha1 => $output.checksum_sha1 = value,
                A::Sha256 => $output.checksum_sha256 = value,
            }
        }
    }};
}
pub(super) use answer_checksum;

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> String {
        let mut h = hasher([algorithm]);
        h.update(bytes);
        value_of(&h.finalize(), algorithm).unwrap().clone()
    }

    #[test]
    fn a_full_object_crc_combined_from_parts_is_the_crc_of_the_whole() {
        let a: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let b: Vec<u8> = (0..33_333u32).map(|i| (i * 13 + 1) as u8).collect();
        let whole = [a.as_slice(), b.as_slice(), b""].concat();
        for algorithm in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64nvme,
        ] {
            let parts = [
                (sum(algorithm, &a), a.len() as u64),
                (sum(algorithm, &b), b.len() as u64),
                (sum(algorithm, b""), 0),
            ];
            let combined = of_parts(algorithm, ChecksumKind::FullObject, &parts).unwrap();
            assert_eq!(combined.value, sum(algorithm, &whole), "{algorithm:?}");
        }
    }

    #[test]
    fn a_composite_checksum_is_the_checksum_of_the_parts_checksums() {
        let parts = [("AAAAAA==".to_string(), 1), ("AAAAAQ==".to_string(), 1)];
        let c = of_parts(ChecksumAlgorithm::Crc32, ChecksumKind::Composite, &parts).unwrap();
        assert_eq!(
            c.value,
            format!(
                "{}-2",
                sum(ChecksumAlgorithm::Crc32, &[0, 0, 0, 0, 0, 0, 0, 1])
            )
        );
    }

    #[test]
    fn sha_is_never_full_object_and_crc64nvme_never_composite() {
        use ChecksumAlgorithm as A;
        assert_eq!(
            upload_kind(A::Crc32, None).unwrap(),
            ChecksumKind::Composite
        );
        assert_eq!(
            upload_kind(A::Crc64nvme, None).unwrap(),
            ChecksumKind::FullObject
        );
        assert_eq!(
            upload_kind(A::Crc32c, Some("FULL_OBJECT")).unwrap(),
            ChecksumKind::FullObject
        );
        assert!(upload_kind(A::Sha256, Some("FULL_OBJECT")).is_err());
        assert!(upload_kind(A::Crc64nvme, Some("COMPOSITE")).is_err());
        assert!(upload_kind(A::Crc32, Some("BOTH")).is_err());
    }
}
