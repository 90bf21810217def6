//! Object and bucket tags: S3's limits and errors, and the `x-amz-tagging` header's form
//! (`k1=v1&k2=v2`, URL-encoded). Pure functions; the operations are in `ops/tagging.rs`.

use s3s::dto::{Tag, Tagging};
use s3s::{S3Result, s3_error};

use crate::limits::{
    S3_BUCKET_TAGS_MAX, S3_OBJECT_TAGS_MAX, S3_TAG_KEY_CHARS_MAX, S3_TAG_VALUE_CHARS_MAX,
};

pub type Tags = Vec<(String, String)>;

/// Whose tags: objects may carry `S3_OBJECT_TAGS_MAX`, buckets `S3_BUCKET_TAGS_MAX`.
#[derive(Clone, Copy)]
pub enum TagOwner {
    Object,
    Bucket,
}

/// Checks a tag set as S3 does: at most so many tags, keys unique, of 1 to 128 characters and
/// not beginning `aws:`, values of at most 256, both of letters, digits, spaces and
/// `+ - = . _ : / @`. Anything else is `InvalidTag`.
pub fn check(tags: &Tags, owner: TagOwner) -> S3Result<()> {
    let max = match owner {
        TagOwner::Object => S3_OBJECT_TAGS_MAX,
        TagOwner::Bucket => S3_BUCKET_TAGS_MAX,
    };
    if tags.len() > max {
        return Err(s3_error!(
            InvalidTag,
            "a tag set holds at most {max} tags here, not {}",
            tags.len()
        ));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > S3_TAG_KEY_CHARS_MAX {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid: a key has 1 to {S3_TAG_KEY_CHARS_MAX} characters"
            ));
        }
        if value.chars().count() > S3_TAG_VALUE_CHARS_MAX {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is invalid: a value has at most {S3_TAG_VALUE_CHARS_MAX} characters"
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(s3_error!(
                InvalidTag,
                "Your TagKey cannot be prefixed with aws:"
            ));
        }
        if !key.chars().chain(value.chars()).all(allowed) {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey or TagValue you have provided is invalid: {key:?}={value:?}"
            ));
        }
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key: {key:?}"
            ));
        }
    }
    Ok(())
}

fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "+-=._:/@".contains(c)
}

/// The tags of an `x-amz-tagging` header, checked.
pub fn from_header(header: Option<&str>) -> S3Result<Tags> {
    let Some(header) = header else {
        return Ok(Vec::new());
    };
    let mut tags = Vec::new();
    for pair in header.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (url_decode(key), url_decode(value)) else {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-tagging is not URL-encoded key=value pairs"
            ));
        };
        tags.push((key, value));
    }
    check(&tags, TagOwner::Object)?;
    Ok(tags)
}

/// The tags of a Tagging document, checked.
pub fn from_tagging(tagging: Tagging, owner: TagOwner) -> S3Result<Tags> {
    let tags: Tags = tagging
        .tag_set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    check(&tags, owner)?;
    Ok(tags)
}

pub fn to_tag_set(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_tagging_header_is_url_encoded_pairs() {
        assert_eq!(
            from_header(Some("deleted=true&a%20b=c+d&empty=")).unwrap(),
            tags(&[("deleted", "true"), ("a b", "c d"), ("empty", "")])
        );
        assert!(from_header(None).unwrap().is_empty());
        let e = from_header(Some("a=%zz")).unwrap_err();
        assert_eq!(*e.code(), S3ErrorCode::InvalidArgument);
    }

    #[test]
    fn tags_outside_s3s_limits_are_invalid_tag() {
        let eleven: Tags = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        let too_long_key = tags(&[(&"k".repeat(129), "v")]);
        let too_long_value = tags(&[("k", &"v".repeat(257))]);
        for bad in [
            eleven.clone(),
            too_long_key,
            too_long_value,
            tags(&[("", "v")]),
            tags(&[("aws:x", "v")]),
            tags(&[("k", "v"), ("k", "w")]),
            tags(&[("k", "v;")]),
        ] {
            let e = check(&bad, TagOwner::Object).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidTag, "{bad:?}");
        }
        assert!(check(&eleven, TagOwner::Bucket).is_ok());
        let fine = tags(&[(&"k".repeat(128), &"v".repeat(256)), ("a b+-=._:/@", "é")]);
        assert!(check(&fine, TagOwner::Object).is_ok());
    }
}
