//! Who may use the S3 front. Two kinds of access key:
//!
//! - the configuration file's (`[s3] credentials_file`), read at start: they may do
//!   everything on every bucket (the seed from which the others are made);
//! - keys managed online (`cairn key`), records of the replicated metadata
//!   (`records::AccessKeyRecord`), each with a permission per bucket (`GrantRecord`).
//!
//! A node keeps the managed keys and grants in memory ([`Keyring`]) and reads both partitions
//! again every `S3_KEYS_REFRESH_MS`, so a deleted key or a withdrawn permission stops working
//! on every node within that time. A key or grant not yet known here is read from the
//! metadata when a request needs it (at most once per `S3_KEYS_RECHECK_MS` for one that is not
//! found, and at most `S3_KEYS_UNKNOWN_READS_PER_SEC_MAX` such reads a second), so a new key
//! works on every node as soon as `cairn key create` returns, and a new permission within
//! `S3_KEYS_REFRESH_MS` at most.
//!
//! SigV4 signs with the secret itself, so a secret cannot be stored hashed: it is sealed with
//! ChaCha20-Poly1305 under the key-encryption key (`[s3] key_encryption_key_file`, by default
//! `s3-key-encryption.key` beside the credentials file; with the access key id
//! as associated data, so a sealed secret cannot be moved to another key). The metadata, its
//! disks and their backups hold no plain secret; nothing logs one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_core::keys::Permission;
use cairn_core::meta::{Partition, Table};
use parking_lot::{Mutex, RwLock};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use s3s::{S3Result, s3_error};

use super::records::{self, AccessKeyRecord, GrantRecord};
use crate::clock;
use crate::config::S3Key;
use crate::limits::{
    S3_KEYS_NOT_FOUND_REMEMBERED_MAX, S3_KEYS_RECHECK_MS, S3_KEYS_REFRESH_MS,
    S3_KEYS_UNKNOWN_READS_PER_SEC_MAX,
};
use crate::meta::cluster::{self as meta, MetaError, Walk};
use crate::state::State;

/// What a request needs of its key (`access::need_of`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any valid key: ListBuckets, which lists only what the key may use.
    AnyKey,
    /// CreateBucket: a configuration key, or a managed key allowed to create buckets.
    CreateBucket,
    /// A permission on a bucket, and for a copy, read on the source's bucket.
    On {
        bucket: String,
        permission: Permission,
        source: Option<String>,
    },
}

/// A managed key as this node knows it.
struct ManagedKey {
    secret: String,
    create_buckets: bool,
}

/// The managed keys and grants, as last read.
#[derive(Default)]
struct Known {
    keys: HashMap<String, Arc<ManagedKey>>,
    /// By bucket, then access key (looked up by `&str`, without allocating).
    grants: HashMap<String, HashMap<String, Permission>>,
}

impl Known {
    fn grant(&self, bucket: &str, access_key: &str) -> Option<Permission> {
        self.grants.get(bucket)?.get(access_key).copied()
    }
}

/// The keys a node's S3 front accepts and what each may do.
pub(crate) struct Keyring {
    state: Arc<State>,
    seeds: HashMap<String, String>,
    sealing: Option<Sealer>,
    known: RwLock<Known>,
    /// Keys and grants read and not found, and when (key id, or `bucket \0 key id`).
    not_found: Mutex<HashMap<String, Instant>>,
    /// Reads of keys and grants not known here in the current second: (its start, count).
    unknown_reads: Mutex<(Instant, u32)>,
    refresh_failed: AtomicBool,
    unseal_warned: AtomicBool,
}

impl Keyring {
    pub(crate) fn new(
        state: Arc<State>,
        seeds: Vec<S3Key>,
        key_encryption_key: Option<[u8; 32]>,
    ) -> Keyring {
        let sealing = key_encryption_key.map(|k| Sealer::new(&k));
        Keyring {
            state,
            seeds: seeds
                .into_iter()
                .map(|k| (k.access_key, k.secret_key))
                .collect(),
            sealing,
            known: RwLock::new(Known::default()),
            not_found: Mutex::new(HashMap::new()),
            unknown_reads: Mutex::new((clock::now(), 0)),
            refresh_failed: AtomicBool::new(false),
            unseal_warned: AtomicBool::new(false),
        }
    }

    /// Whether this node can seal and unseal managed keys' secrets.
    pub(crate) fn manages_keys(&self) -> bool {
        self.sealing.is_some()
    }

    pub(crate) fn is_seed(&self, access_key: &str) -> bool {
        self.seeds.contains_key(access_key)
    }

    /// The secret of a key, for the signature check; InvalidAccessKeyId for an unknown one.
    pub(crate) async fn secret_of(&self, access_key: &str) -> S3Result<String> {
        if let Some(secret) = self.seeds.get(access_key) {
            return Ok(secret.clone());
        }
        if let Some(key) = self.managed(access_key).await? {
            return Ok(key.secret.clone());
        }
        Err(s3_error!(
            InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records."
        ))
    }

    /// Refuses a request its key may not make (AccessDenied).
    pub(crate) async fn authorize(&self, access_key: &str, need: &Need) -> S3Result<()> {
        if self.is_seed(access_key) {
            return Ok(());
        }
        let allowed = match need {
            Need::AnyKey => true,
            Need::CreateBucket => self
                .managed(access_key)
                .await?
                .is_some_and(|k| k.create_buckets),
            Need::On {
                bucket,
                permission,
                source,
            } => {
                let here = self.permission(access_key, bucket).await?;
                let there = match source {
                    Some(source) => self.permission(access_key, source).await?,
                    None => Some(Permission::Read),
                };
                here.is_some_and(|p| p.permits(*permission))
                    && there.is_some_and(|p| p.permits(Permission::Read))
            }
        };
        match allowed {
            true => Ok(()),
            false => Err(s3_error!(AccessDenied, "Access Denied")),
        }
    }

    /// What a key may do on a bucket (a configuration key: everything).
    pub(crate) async fn permission(
        &self,
        access_key: &str,
        bucket: &str,
    ) -> S3Result<Option<Permission>> {
        if self.is_seed(access_key) {
            return Ok(Some(Permission::Owner));
        }
        if let Some(p) = self.known.read().grant(bucket, access_key) {
            return Ok(Some(p));
        }
        let marker = format!("{bucket}\0{access_key}");
        if self.recently_not_found(&marker) || !self.may_read_unknown() {
            return Ok(None);
        }
        let entry = meta::read(&self.state, &records::grant_key(bucket, access_key))
            .await
            .map_err(super::rules::meta_error)?;
        match entry
            .and_then(|e| e.value)
            .and_then(|v| records::decode::<GrantRecord>(&v))
        {
            Some(grant) => {
                self.note_grant(access_key, bucket, grant.permission);
                Ok(Some(grant.permission))
            }
            None => {
                self.note_not_found(marker);
                Ok(None)
            }
        }
    }

    /// Whether a key may use a bucket at all (ListBuckets shows it only those).
    pub(crate) fn may_see(&self, access_key: &str, bucket: &str) -> bool {
        self.is_seed(access_key) || self.known.read().grant(bucket, access_key).is_some()
    }

    /// Notes a permission this node just wrote (a key creating a bucket owns it).
    pub(crate) fn note_grant(&self, access_key: &str, bucket: &str, permission: Permission) {
        self.known
            .write()
            .grants
            .entry(bucket.to_string())
            .or_default()
            .insert(access_key.to_string(), permission);
    }

    async fn managed(&self, access_key: &str) -> S3Result<Option<Arc<ManagedKey>>> {
        if let Some(key) = self.known.read().keys.get(access_key) {
            return Ok(Some(key.clone()));
        }
        if self.sealing.is_none()
            || !is_managed_key_id(access_key)
            || self.recently_not_found(access_key)
            || !self.may_read_unknown()
        {
            return Ok(None);
        }
        let entry = meta::read(&self.state, &records::access_key_key(access_key))
            .await
            .map_err(super::rules::meta_error)?;
        let record = entry
            .and_then(|e| e.value)
            .and_then(|v| records::decode::<AccessKeyRecord>(&v));
        match record.and_then(|r| self.open(access_key, &r)) {
            Some(key) => {
                let key = Arc::new(key);
                self.known
                    .write()
                    .keys
                    .insert(access_key.to_string(), key.clone());
                Ok(Some(key))
            }
            None => {
                self.note_not_found(access_key.to_string());
                Ok(None)
            }
        }
    }

    /// Whether another key or grant not known here may be read now: at most
    /// `S3_KEYS_UNKNOWN_READS_PER_SEC_MAX` a second, so requests naming made-up keys cannot
    /// turn into metadata reads without bound.
    fn may_read_unknown(&self) -> bool {
        let mut budget = self.unknown_reads.lock();
        if clock::since(budget.0) >= Duration::from_secs(1) {
            *budget = (clock::now(), 0);
        }
        budget.1 += 1;
        budget.1 <= S3_KEYS_UNKNOWN_READS_PER_SEC_MAX
    }

    fn recently_not_found(&self, what: &str) -> bool {
        self.not_found
            .lock()
            .get(what)
            .is_some_and(|t| clock::since(*t) < Duration::from_millis(S3_KEYS_RECHECK_MS))
    }

    fn note_not_found(&self, what: String) {
        let mut seen = self.not_found.lock();
        if seen.len() >= S3_KEYS_NOT_FOUND_REMEMBERED_MAX {
            seen.clear();
        }
        seen.insert(what, clock::now());
    }

    /// Seals a new key's secret (`None`: this node has no key-encryption key).
    pub(crate) fn seal(&self, access_key: &str, secret: &str) -> Option<Vec<u8>> {
        self.sealing.as_ref()?.seal(access_key, secret)
    }

    /// A managed key from its record; `None` (and one WARN) if its secret does not unseal
    /// under this node's key-encryption key.
    fn open(&self, access_key: &str, record: &AccessKeyRecord) -> Option<ManagedKey> {
        let secret =
            (self.sealing.as_ref()).and_then(|s| s.unseal(access_key, &record.sealed_secret));
        if secret.is_none() && !self.unseal_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                access_key,
                "the secret of a managed access key does not unseal with this node's \
                 key-encryption key: is it the same on every node? (logged once)"
            );
        }
        Some(ManagedKey {
            secret: secret?,
            create_buckets: record.create_buckets,
        })
    }

    /// Reads every managed key and grant again and replaces what this node knew.
    pub(crate) async fn refresh(&self) -> Result<(), MetaError> {
        let mut fresh = Known::default();
        if self.sealing.is_some() {
            let mut found = Vec::new();
            let part = Partition::new(Table::Buckets, records::ACCESS_KEYS_PARTITION);
            meta::walk(&self.state, &part, None, b"", |key, entry| {
                let record = entry
                    .value
                    .as_deref()
                    .and_then(records::decode::<AccessKeyRecord>);
                if let (Ok(id), Some(record)) = (std::str::from_utf8(key), record) {
                    found.push((id.to_string(), record));
                }
                Walk::Next
            })
            .await?;
            for (id, record) in found {
                if let Some(key) = self.open(&id, &record) {
                    fresh.keys.insert(id, Arc::new(key));
                }
            }
        }
        let part = Partition::new(Table::Buckets, records::GRANTS_PARTITION);
        meta::walk(&self.state, &part, None, b"", |key, entry| {
            let grant = entry
                .value
                .as_deref()
                .and_then(records::decode::<GrantRecord>);
            if let (Some((bucket, id)), Some(grant)) = (records::split_pair(key), grant) {
                let keys = fresh.grants.entry(bucket).or_default();
                keys.insert(id, grant.permission);
            }
            Walk::Next
        })
        .await?;
        *self.known.write() = fresh;
        // What was not found before this read began is in it if it exists now.
        self.not_found.lock().clear();
        Ok(())
    }

    /// Refreshes every `S3_KEYS_REFRESH_MS` until the node stops; a failure keeps what was
    /// known, counts, and is logged once until a refresh succeeds again.
    pub(crate) async fn refresh_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(S3_KEYS_REFRESH_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match self.refresh().await {
                Ok(()) => {
                    if self.refresh_failed.swap(false, Ordering::Relaxed) {
                        tracing::info!("access keys and permissions read again");
                    }
                }
                Err(e) => {
                    let failures = &self.state.figures.s3_keys_refresh_failures;
                    failures.fetch_add(1, Ordering::Relaxed);
                    if !self.refresh_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "cannot read the access keys and permissions; the last ones \
                             read stay in force (logged once until it works again)"
                        );
                    }
                }
            }
        }
    }
}

/// Seals secrets with ChaCha20-Poly1305 under the key-encryption key: a random nonce, then the
/// ciphertext and tag; the access key id is the associated data.
struct Sealer(LessSafeKey);

impl Sealer {
    fn new(key: &[u8; 32]) -> Sealer {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte ChaCha20 key");
        Sealer(LessSafeKey::new(key))
    }

    fn seal(&self, access_key: &str, secret: &str) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut sealed = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(access_key.as_bytes()),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The secret, if `sealed` was sealed by this key for this access key, unchanged.
    fn unseal(&self, access_key: &str, sealed: &[u8]) -> Option<String> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(access_key.as_bytes()), &mut body)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// The prefix of every managed access key id (`cairn key create` makes `CAIRN` and 16
/// uppercase hexadecimal digits).
pub(crate) const MANAGED_KEY_PREFIX: &str = "CAIRN";
/// Hexadecimal digits after the prefix.
pub(crate) const MANAGED_KEY_HEX_DIGITS: usize = 16;

/// Whether an access key id has the form of a managed key's (only those are looked up).
fn is_managed_key_id(access_key: &str) -> bool {
    access_key
        .strip_prefix(MANAGED_KEY_PREFIX)
        .is_some_and(|digits| {
            digits.len() == MANAGED_KEY_HEX_DIGITS
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_for_its_access_key_and_unchanged() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal("CAIRNA", "the-secret-value").unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "the plain text shows"
        );
        assert_eq!(
            sealer.unseal("CAIRNA", &sealed).as_deref(),
            Some("the-secret-value")
        );
        let again = sealer.seal("CAIRNA", "the-secret-value").unwrap();
        assert_ne!(sealed, again, "a nonce was used twice");
        assert_eq!(
            sealer.unseal("CAIRNB", &sealed),
            None,
            "moved to another key id"
        );
        assert_eq!(
            Sealer::new(&[8; 32]).unseal("CAIRNA", &sealed),
            None,
            "another KEK"
        );
        for i in 0..sealed.len() {
            let mut bent = sealed.clone();
            bent[i] ^= 1;
            assert_eq!(sealer.unseal("CAIRNA", &bent), None, "byte {i} flipped");
        }
        assert_eq!(sealer.unseal("CAIRNA", &sealed[..5]), None);
    }

    #[test]
    fn only_ids_of_the_managed_form_are_looked_up() {
        assert!(is_managed_key_id("CAIRN0123456789ABCDEF"));
        assert!(!is_managed_key_id("CAIRN0123456789abcdef"));
        assert!(!is_managed_key_id("CAIRN0123"));
        assert!(!is_managed_key_id("AKIAIOSFODNN7EXAMPLE"));
    }

    #[test]
    fn a_grants_sort_key_splits_into_bucket_and_key() {
        let key = records::grant_sort_key("bucket-a", "CAIRNX");
        assert_eq!(
            records::split_pair(&key),
            Some(("bucket-a".into(), "CAIRNX".into()))
        );
        assert_eq!(records::split_pair(b"no-separator"), None);
    }
}
