//! Key and bucket administration (`cairn key`, `cairn bucket`), answered by a node's S3 front:
//! every change is a quorum write of the replicated metadata, so it holds on every node (see
//! `keys` for how soon each node acts on it).

use std::sync::Arc;

use cairn_core::keys::{BucketView, KeyView, KeysAnswer, KeysRequest, Permission, SecretText};
use cairn_core::meta::{Entry, MetaKey, Partition, Table};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;

use super::keys::{Keyring, MANAGED_KEY_HEX_DIGITS, MANAGED_KEY_PREFIX};
use super::records::{self, AccessKeyRecord, BucketRecord, GrantRecord, ObjectRecord};
use crate::certs::{S3_SECRET_RANDOM_BYTES, hex};
use crate::clock;
use crate::limits::{
    S3_BUCKET_INFO_OBJECTS_COUNTED_MAX, S3_FORGET_BATCH_ENTRIES_MAX, S3_KEY_NAME_CHARS_MAX,
    S3_MANAGED_KEYS_MAX,
};
use crate::meta::cluster::{self as meta, MetaError, Walk};
use crate::state::{KeysCall, State};

/// Answers the desk's requests until the node stops, each in its own task.
pub(super) async fn serve(
    state: Arc<State>,
    keys: Arc<Keyring>,
    mut inbox: mpsc::Receiver<KeysCall>,
) {
    while let Some(call) = inbox.recv().await {
        let admin = Admin {
            state: state.clone(),
            keys: keys.clone(),
        };
        crate::task::spawn(async move {
            let answer = admin.answer(call.request).await;
            let _ = call
                .answer
                .send(answer.unwrap_or_else(|e| KeysAnswer::Refused(e.to_string())));
        });
    }
}

struct Admin {
    state: Arc<State>,
    keys: Arc<Keyring>,
}

type Answer = Result<KeysAnswer, KeysError>;

/// Why a key or bucket request was not carried out (sent back as `KeysAnswer::Refused`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum KeysError {
    #[error("the metadata could not be read or written: {0}")]
    Meta(#[from] MetaError),
    #[error("a key's name has at most {S3_KEY_NAME_CHARS_MAX} characters and no control character")]
    KeyName,
    #[error(
        "this node has no key-encryption key, which seals managed keys' secrets: write one \
         (`cairn certs --s3-credentials` makes s3-key-encryption.key beside the credentials \
         file; the same on every node) and restart the node"
    )]
    NoSealingKey,
    #[error(
        "there are {0} managed keys already, the most Cairn keeps ({S3_MANAGED_KEYS_MAX}); \
         delete one first"
    )]
    TooManyKeys(usize),
    #[error("the system random source failed")]
    Random,
    #[error(
        "{0} is a key of the configuration file: it may use every bucket, and is changed in \
         that file"
    )]
    SeedKey(String),
    #[error("no managed access key {0}")]
    NoSuchKey(String),
    #[error("no bucket {0}")]
    NoSuchBucket(String),
    #[error(
        "{0:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
    )]
    BucketName(String),
    #[error("bucket {0} exists already")]
    BucketExists(String),
    #[error("bucket {bucket} holds {what}: delete them (or abort them) first")]
    BucketNotEmpty { bucket: String, what: &'static str },
}

impl Admin {
    async fn answer(&self, request: KeysRequest) -> Answer {
        match request {
            KeysRequest::CreateKey {
                name,
                create_buckets,
            } => self.create_key(name, create_buckets).await,
            KeysRequest::ListKeys => Ok(KeysAnswer::Keys(self.keys_with_grants().await?)),
            KeysRequest::DeleteKey { access_key } => self.delete_key(&access_key).await,
            KeysRequest::Allow {
                access_key,
                bucket,
                permission,
            } => self.allow(&access_key, &bucket, permission).await,
            KeysRequest::Deny { access_key, bucket } => self.deny(&access_key, &bucket).await,
            KeysRequest::CreateBucket { bucket } => self.create_bucket(&bucket).await,
            KeysRequest::ListBuckets => self.list_buckets().await,
            KeysRequest::DeleteBucket { bucket } => self.delete_bucket(&bucket).await,
            KeysRequest::BucketInfo { bucket } => self.bucket_info(&bucket).await,
        }
    }

    async fn write(&self, key: MetaKey, value: Option<Vec<u8>>) -> Result<(), KeysError> {
        self.delete_or_write(vec![key], value).await
    }

    /// Writes `value` (`None`: deletes) under every key of one partition, a quorum round per
    /// `S3_FORGET_BATCH_ENTRIES_MAX` keys (a batch stays under the node protocol's limit).
    async fn delete_or_write(
        &self,
        keys: Vec<MetaKey>,
        value: Option<Vec<u8>>,
    ) -> Result<(), KeysError> {
        for batch in keys.chunks(S3_FORGET_BATCH_ENTRIES_MAX) {
            let stamp = meta::stamp(&self.state);
            let writes = batch
                .iter()
                .map(|key| {
                    let value = value.clone();
                    (key.clone(), Entry { stamp, value })
                })
                .collect();
            meta::write(&self.state, writes).await?;
        }
        Ok(())
    }

    async fn read<T: records::Record>(&self, key: &MetaKey) -> Result<Option<T>, KeysError> {
        let entry = meta::read(&self.state, key).await?;
        Ok(entry
            .and_then(|e| e.value)
            .and_then(|v| records::decode::<T>(&v)))
    }

    /// Every live record of a partition with `prefix`, up to `max` (`Walk` stops there).
    async fn walk(
        &self,
        part: &str,
        prefix: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Walk,
    ) -> Result<(), KeysError> {
        let part = Partition::new(Table::Buckets, part);
        meta::walk(&self.state, &part, None, prefix, |key, entry| {
            each(key, entry.value.as_deref().unwrap_or_default())
        })
        .await?;
        Ok(())
    }

    async fn create_key(&self, name: String, create_buckets: bool) -> Answer {
        if name.chars().count() > S3_KEY_NAME_CHARS_MAX || name.chars().any(char::is_control) {
            return Err(KeysError::KeyName);
        }
        if !self.keys.manages_keys() {
            return Err(KeysError::NoSealingKey);
        }
        let mut count = 0;
        self.walk(records::ACCESS_KEYS_PARTITION, b"", |_, _| {
            count += 1;
            Walk::Next
        })
        .await?;
        if count >= S3_MANAGED_KEYS_MAX {
            return Err(KeysError::TooManyKeys(count));
        }
        const ID_BYTES: usize = MANAGED_KEY_HEX_DIGITS / 2;
        let mut random = [0u8; ID_BYTES + S3_SECRET_RANDOM_BYTES];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| KeysError::Random)?;
        let id = hex(&random[..ID_BYTES]).to_uppercase();
        let access_key = format!("{MANAGED_KEY_PREFIX}{id}");
        let secret = hex(&random[ID_BYTES..]);
        let sealed_secret = self
            .keys
            .seal(&access_key, &secret)
            .ok_or(KeysError::NoSealingKey)?;
        let record = AccessKeyRecord {
            name,
            sealed_secret,
            create_buckets,
            created_ms: clock::wall_ms(),
        };
        self.write(
            records::access_key_key(&access_key),
            Some(records::encode(&record)),
        )
        .await?;
        tracing::info!(access_key, "access key created");
        Ok(KeysAnswer::Created {
            access_key,
            secret_key: SecretText(secret),
        })
    }

    /// Every managed key with the permissions it holds.
    async fn keys_with_grants(&self) -> Result<Vec<KeyView>, KeysError> {
        let mut keys = Vec::new();
        self.walk(records::ACCESS_KEYS_PARTITION, b"", |id, value| {
            if let (Ok(id), Some(record)) = (
                std::str::from_utf8(id),
                records::decode::<AccessKeyRecord>(value),
            ) {
                keys.push(KeyView {
                    access_key: id.to_string(),
                    name: record.name,
                    create_buckets: record.create_buckets,
                    created_ms: record.created_ms,
                    grants: Vec::new(),
                });
            }
            Walk::Next
        })
        .await?;
        for (bucket, id, permission) in self.grants(b"").await? {
            if let Some(key) = keys.iter_mut().find(|k| k.access_key == id) {
                key.grants.push((bucket, permission));
            }
        }
        Ok(keys)
    }

    /// The grants with a sort-key prefix: (bucket, access key, permission).
    async fn grants(&self, prefix: &[u8]) -> Result<Vec<(String, String, Permission)>, KeysError> {
        let mut grants = Vec::new();
        self.walk(records::GRANTS_PARTITION, prefix, |key, value| {
            if let (Some((bucket, id)), Some(grant)) = (
                records::split_pair(key),
                records::decode::<GrantRecord>(value),
            ) {
                grants.push((bucket, id, grant.permission));
            }
            Walk::Next
        })
        .await?;
        Ok(grants)
    }

    async fn require_key(&self, access_key: &str) -> Result<(), KeysError> {
        if self.keys.is_seed(access_key) {
            return Err(KeysError::SeedKey(access_key.to_string()));
        }
        match self
            .read::<AccessKeyRecord>(&records::access_key_key(access_key))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(KeysError::NoSuchKey(access_key.to_string())),
        }
    }

    async fn require_bucket(&self, bucket: &str) -> Result<BucketRecord, KeysError> {
        self.read::<BucketRecord>(&records::bucket_key(bucket))
            .await?
            .ok_or_else(|| KeysError::NoSuchBucket(bucket.to_string()))
    }

    async fn delete_key(&self, access_key: &str) -> Answer {
        self.require_key(access_key).await?;
        // Its permissions go first: a key is never left with grants and no record of it.
        let held: Vec<_> = self
            .grants(b"")
            .await?
            .into_iter()
            .filter(|(_, id, _)| id == access_key)
            .collect();
        let grants = held
            .iter()
            .map(|(b, _, _)| records::grant_key(b, access_key));
        self.delete_or_write(grants.collect(), None).await?;
        self.write(records::access_key_key(access_key), None)
            .await?;
        tracing::info!(access_key, "access key deleted");
        Ok(KeysAnswer::Done(format!(
            "deleted {access_key} and its {} permissions",
            held.len()
        )))
    }

    async fn allow(&self, access_key: &str, bucket: &str, permission: Permission) -> Answer {
        self.require_key(access_key).await?;
        self.require_bucket(bucket).await?;
        let grant = GrantRecord { permission };
        self.write(
            records::grant_key(bucket, access_key),
            Some(records::encode(&grant)),
        )
        .await?;
        tracing::info!(access_key, bucket, %permission, "permission given");
        Ok(KeysAnswer::Done(format!(
            "{access_key} may {permission} on {bucket}"
        )))
    }

    async fn deny(&self, access_key: &str, bucket: &str) -> Answer {
        self.require_key(access_key).await?;
        self.write(records::grant_key(bucket, access_key), None)
            .await?;
        tracing::info!(access_key, bucket, "permission withdrawn");
        Ok(KeysAnswer::Done(format!(
            "{access_key} may do nothing on {bucket}"
        )))
    }

    async fn create_bucket(&self, bucket: &str) -> Answer {
        if !s3s::path::check_bucket_name(bucket) {
            return Err(KeysError::BucketName(bucket.to_string()));
        }
        if self
            .read::<BucketRecord>(&records::bucket_key(bucket))
            .await?
            .is_some()
        {
            return Err(KeysError::BucketExists(bucket.to_string()));
        }
        let record = BucketRecord {
            created_ms: clock::wall_ms(),
        };
        self.write(records::bucket_key(bucket), Some(records::encode(&record)))
            .await?;
        tracing::info!(bucket, "bucket created");
        Ok(KeysAnswer::Done(format!("created bucket {bucket}")))
    }

    async fn list_buckets(&self) -> Answer {
        let mut buckets = Vec::new();
        let part = records::BUCKETS_PARTITION;
        self.walk(part, b"", |name, value| {
            if let (Ok(name), Some(record)) = (
                std::str::from_utf8(name),
                records::decode::<BucketRecord>(value),
            ) {
                buckets.push(BucketView {
                    name: name.to_string(),
                    created_ms: record.created_ms,
                    grants: Vec::new(),
                    objects: 0,
                    bytes: 0,
                    complete: false,
                });
            }
            Walk::Next
        })
        .await?;
        for (bucket, id, permission) in self.grants(b"").await? {
            if let Some(b) = buckets.iter_mut().find(|b| b.name == bucket) {
                b.grants.push((id, permission));
            }
        }
        Ok(KeysAnswer::Buckets(buckets))
    }

    async fn bucket_info(&self, bucket: &str) -> Answer {
        let record = self.require_bucket(bucket).await?;
        let (objects, bytes, complete) = self.count_objects(bucket).await?;
        let grants = self
            .grants(&records::grant_sort_key(bucket, ""))
            .await?
            .into_iter()
            .map(|(_, id, permission)| (id, permission))
            .collect();
        Ok(KeysAnswer::Bucket(BucketView {
            name: bucket.to_string(),
            created_ms: record.created_ms,
            grants,
            objects,
            bytes,
            complete,
        }))
    }

    /// Objects and bytes of a bucket, counted up to `S3_BUCKET_INFO_OBJECTS_COUNTED_MAX`.
    async fn count_objects(&self, bucket: &str) -> Result<(u64, u64, bool), KeysError> {
        let (mut objects, mut bytes, mut complete) = (0u64, 0u64, true);
        let part = Partition::new(Table::Objects, bucket);
        meta::walk(&self.state, &part, None, b"", |_, entry| {
            if objects == S3_BUCKET_INFO_OBJECTS_COUNTED_MAX {
                complete = false;
                return Walk::Stop;
            }
            objects += 1;
            if let Some(record) = entry
                .value
                .as_deref()
                .and_then(records::decode::<ObjectRecord>)
            {
                bytes += record.size;
            }
            Walk::Next
        })
        .await?;
        Ok((objects, bytes, complete))
    }

    async fn delete_bucket(&self, bucket: &str) -> Answer {
        self.require_bucket(bucket).await?;
        let mut holds = None;
        for (table, what) in [
            (Table::Objects, "objects"),
            (Table::Uploads, "unfinished uploads"),
        ] {
            let mut any = false;
            meta::walk(
                &self.state,
                &Partition::new(table, bucket),
                None,
                b"",
                |_, _| {
                    any = true;
                    Walk::Stop
                },
            )
            .await?;
            if any {
                holds = Some(what);
                break;
            }
        }
        if let Some(what) = holds {
            return Err(KeysError::BucketNotEmpty {
                bucket: bucket.to_string(),
                what,
            });
        }
        self.write(records::bucket_tagging_key(bucket), None)
            .await?;
        self.write(records::bucket_lifecycle_key(bucket), None)
            .await?;
        let grants = self.grants(&records::grant_sort_key(bucket, "")).await?;
        let grants = grants
            .iter()
            .map(|(_, id, _)| records::grant_key(bucket, id));
        self.delete_or_write(grants.collect(), None).await?;
        self.write(records::bucket_key(bucket), None).await?;
        tracing::info!(bucket, "bucket deleted");
        Ok(KeysAnswer::Done(format!("deleted bucket {bucket}")))
    }
}
