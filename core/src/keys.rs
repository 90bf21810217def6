//! Access keys and their permissions on buckets, as the node protocol carries them: what
//! `cairn key` and `cairn bucket` ask a node ([`KeysRequest`]) and what it answers
//! ([`KeysAnswer`]), and the one rule of permissions ([`Permission::permits`]). Data only:
//! the records, their cache and the checks on requests are the node's S3 front.

use serde::{Deserialize, Serialize};

/// What a key may do on a bucket. Each permission includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read and list objects, read the bucket's settings.
    Read,
    /// Also write, copy and delete objects and their tags, and run multipart uploads.
    Write,
    /// Also change the bucket's settings and delete the bucket.
    Owner,
}

impl Permission {
    /// Whether holding `self` allows what needs `needed`.
    pub fn permits(self, needed: Permission) -> bool {
        self >= needed
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret access key on its way to the operator who created it: shown once, never printed
/// by `Debug`, so no log line or error message can carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// An administrative request about keys and buckets (from `cairn key` and `cairn bucket`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeysRequest {
    /// A new access key with a random secret; `create_buckets` lets it create buckets through
    /// S3 (it owns those it creates).
    CreateKey {
        name: String,
        create_buckets: bool,
    },
    ListKeys,
    /// Delete a key and every permission it holds.
    DeleteKey {
        access_key: String,
    },
    /// Give a key a permission on a bucket (replacing the one it had).
    Allow {
        access_key: String,
        bucket: String,
        permission: Permission,
    },
    /// Take every permission a key has on a bucket.
    Deny {
        access_key: String,
        bucket: String,
    },
    CreateBucket {
        bucket: String,
    },
    ListBuckets,
    /// Delete a bucket that holds no object and no unfinished upload.
    DeleteBucket {
        bucket: String,
    },
    BucketInfo {
        bucket: String,
    },
}

/// A key as `cairn key list` shows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub access_key: String,
    pub name: String,
    pub create_buckets: bool,
    pub created_ms: u64,
    /// The buckets it may use, by name.
    pub grants: Vec<(String, Permission)>,
}

/// A bucket as `cairn bucket list` and `info` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketView {
    pub name: String,
    pub created_ms: u64,
    /// The keys that may use it (besides the configuration file's, which may use every
    /// bucket).
    pub grants: Vec<(String, Permission)>,
    /// Objects and their bytes, counted up to a bound (`complete` false beyond it; `list`
    /// does not count).
    pub objects: u64,
    pub bytes: u64,
    pub complete: bool,
}

/// The answer to a [`KeysRequest`]; a refusal is the node protocol's `Refused`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeysAnswer {
    Created {
        access_key: String,
        secret_key: SecretText,
    },
    Keys(Vec<KeyView>),
    Buckets(Vec<BucketView>),
    Bucket(BucketView),
    /// Done; what changed, in words.
    Done(String),
    /// Not done, and why (no such key, a bucket not empty, ...): asking another node would
    /// get the same answer.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_permission_includes_the_ones_before_it_and_no_later_one() {
        use Permission::*;
        let all = [Read, Write, Owner];
        for (i, have) in all.iter().enumerate() {
            for (j, need) in all.iter().enumerate() {
                assert_eq!(have.permits(*need), i >= j, "{have} for {need}");
            }
        }
        let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["read", "write", "owner"]);
    }

    #[test]
    fn a_secret_is_never_in_debug_output() {
        let answer = KeysAnswer::Created {
            access_key: "CAIRNK1".into(),
            secret_key: SecretText("s3cr3t-value".into()),
        };
        let shown = format!("{answer:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("CAIRNK1"), "{shown}");
    }
}
