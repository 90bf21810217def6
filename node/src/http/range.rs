//! The `Range` request header (RFC 9110, section 14): one byte range, resolved against a
//! blob's length. Anything else (other units, several ranges, bad syntax) is ignored and the
//! whole blob is served, as the RFC allows.

/// What a `Range` header asks of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve everything (200).
    Full,
    /// `len` bytes at `offset` (206); `len` is at least 1.
    Part { offset: u64, len: u64 },
    /// A range that starts past the end, or an empty suffix (416).
    Unsatisfiable,
}

/// Resolves `header` (the value of `Range`) against a blob of `blob_len` bytes.
pub fn resolve(header: &str, blob_len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if blob_len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => {
                let len = n.min(blob_len);
                RangeRequest::Part {
                    offset: blob_len - len,
                    len,
                }
            }
        },
        // bytes=A-: from A to the end.
        (false, true) => match number(first) {
            None => RangeRequest::Full,
            Some(a) if a >= blob_len => RangeRequest::Unsatisfiable,
            Some(a) => RangeRequest::Part {
                offset: a,
                len: blob_len - a,
            },
        },
        // bytes=A-B, inclusive.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= blob_len {
                    RangeRequest::Unsatisfiable
                } else {
                    let end = b.min(blob_len - 1);
                    RangeRequest::Part {
                        offset: a,
                        len: end - a + 1,
                    }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Full, Part, Unsatisfiable};
    use super::*;

    #[test]
    fn single_ranges_resolve_against_the_length() {
        assert_eq!(resolve("bytes=0-0", 10), Part { offset: 0, len: 1 });
        assert_eq!(resolve("bytes=2-5", 10), Part { offset: 2, len: 4 });
        assert_eq!(resolve("bytes=2-99", 10), Part { offset: 2, len: 8 });
        assert_eq!(resolve("bytes=7-", 10), Part { offset: 7, len: 3 });
        assert_eq!(resolve("bytes=-3", 10), Part { offset: 7, len: 3 });
        assert_eq!(resolve("bytes=-30", 10), Part { offset: 0, len: 10 });
        // Stray spaces are tolerated.
        assert_eq!(resolve(" bytes= 1 - 2 ", 10), Part { offset: 1, len: 2 });
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(resolve("bytes=10-", 10), Unsatisfiable);
        assert_eq!(resolve("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(resolve("bytes=-0", 10), Unsatisfiable);
        assert_eq!(resolve("bytes=0-", 0), Unsatisfiable);
        assert_eq!(resolve("bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn anything_else_is_ignored() {
        for header in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(resolve(header, 10), Full, "{header:?}");
        }
    }
}
