//! Bucket lifecycle configurations: S3's validation, the record they are stored as, and when
//! a rule expires an object or aborts an upload. Pure functions; the operations are in
//! `ops/lifecycle.rs` and the pass that applies them runs with the collector (`gc`).
//!
//! Cairn keeps one version of each object in one storage class, so rules about noncurrent
//! versions, delete markers and transitions are refused with `NotImplemented` rather than
//! stored and never honoured.

use serde::{Deserialize, Serialize};

use s3s::dto::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator, LifecycleRuleFilter, Tag,
};
use s3s::{S3Result, s3_error};

use super::records::Record;
use super::rules::{ms_of, timestamp};
use super::tags::{self, TagOwner, Tags};
use crate::limits::{S3_LIFECYCLE_RULE_ID_CHARS_MAX, S3_LIFECYCLE_RULES_MAX};

const DAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    pub expiration: Option<Expiration>,
    /// Days after initiation an unfinished multipart upload is aborted.
    pub abort_upload_days: Option<u32>,
}

/// What a rule applies to: every condition holds. `legacy_prefix` keeps a rule's top-level
/// `<Prefix>` (the form before `<Filter>`) so it is answered back as it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub prefix: String,
    pub tags: Tags,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
    pub legacy_prefix: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiration {
    /// Objects expire at the first midnight (UTC) at least this many days after they were last
    /// modified, as S3 counts.
    Days(u32),
    /// Every object the rule applies to expires from this midnight (UTC) on.
    DateMs(u64),
}

/// New in record version 2.
impl Record for Lifecycle {
    fn from_version_1(_: &[u8]) -> Option<Self> {
        None
    }
}

fn positive_days(days: Option<i32>, what: &str) -> S3Result<Option<u32>> {
    match days {
        None => Ok(None),
        Some(d) if d > 0 => Ok(Some(d as u32)),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "'Days' for {what} action must be a positive integer"
        )),
    }
}

/// A lifecycle configuration as S3 checks it.
pub fn from_dto(config: BucketLifecycleConfiguration) -> S3Result<Lifecycle> {
    if config.rules.is_empty() || config.rules.len() > S3_LIFECYCLE_RULES_MAX {
        return Err(s3_error!(
            MalformedXML,
            "a lifecycle configuration has 1 to {S3_LIFECYCLE_RULES_MAX} rules"
        ));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(config.rules.len());
    for (i, rule) in config.rules.into_iter().enumerate() {
        let rule = rule_from_dto(rule, i)?;
        if rules.iter().any(|r| r.id == rule.id) {
            return Err(s3_error!(
                InvalidArgument,
                "Rule ID must be unique. Found same ID for more than one rule: {}",
                rule.id
            ));
        }
        rules.push(rule);
    }
    Ok(Lifecycle { rules })
}

fn rule_from_dto(rule: LifecycleRule, index: usize) -> S3Result<Rule> {
    let id = match rule.id {
        Some(id) if id.chars().count() > S3_LIFECYCLE_RULE_ID_CHARS_MAX => {
            return Err(s3_error!(
                InvalidArgument,
                "ID length should not exceed allowed limit of {S3_LIFECYCLE_RULE_ID_CHARS_MAX}"
            ));
        }
        Some(id) if !id.is_empty() => id,
        // S3 names an unnamed rule itself.
        _ => format!("rule-{}", index + 1),
    };
    let enabled = match rule.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        other => return Err(s3_error!(MalformedXML, "unknown rule status {other:?}")),
    };
    if rule.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || rule
            .noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return Err(s3_error!(
            NotImplemented,
            "Cairn has one storage class: transitions are not supported"
        ));
    }
    if rule.noncurrent_version_expiration.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "Cairn keeps no noncurrent versions: NoncurrentVersionExpiration is not supported"
        ));
    }
    let filter = match (rule.prefix, rule.filter) {
        (Some(_), Some(_)) => {
            return Err(s3_error!(
                MalformedXML,
                "a rule has either a Prefix or a Filter, not both"
            ));
        }
        (Some(prefix), None) => Filter {
            prefix,
            legacy_prefix: true,
            ..Default::default()
        },
        (None, Some(filter)) => filter_from_dto(filter)?,
        (None, None) => {
            return Err(s3_error!(
                MalformedXML,
                "a rule needs a Filter (an empty one applies to every object) or a Prefix"
            ));
        }
    };
    let expiration = match rule.expiration {
        None => None,
        Some(e) => Some(expiration_from_dto(e)?),
    };
    let abort_upload_days = match rule.abort_incomplete_multipart_upload {
        None => None,
        Some(AbortIncompleteMultipartUpload {
            days_after_initiation,
        }) => {
            if !filter.tags.is_empty() {
                return Err(s3_error!(
                    InvalidArgument,
                    "AbortIncompleteMultipartUpload cannot be specified with Tags."
                ));
            }
            Some(
                positive_days(days_after_initiation, "AbortIncompleteMultipartUpload")?
                    .ok_or_else(|| s3_error!(MalformedXML, "DaysAfterInitiation is missing"))?,
            )
        }
    };
    if expiration.is_none() && abort_upload_days.is_none() {
        return Err(s3_error!(
            InvalidRequest,
            "At least one action needs to be specified in a rule"
        ));
    }
    Ok(Rule {
        id,
        enabled,
        filter,
        expiration,
        abort_upload_days,
    })
}

fn filter_from_dto(filter: LifecycleRuleFilter) -> S3Result<Filter> {
    let tag_pair = |t: Tag| (t.key.unwrap_or_default(), t.value.unwrap_or_default());
    let set = [
        filter.and.is_some(),
        filter.prefix.is_some(),
        filter.tag.is_some(),
        filter.object_size_greater_than.is_some(),
        filter.object_size_less_than.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set > 1 {
        return Err(s3_error!(
            MalformedXML,
            "a Filter holds one condition; several go in an And"
        ));
    }
    let out = match filter.and {
        Some(LifecycleRuleAndOperator {
            object_size_greater_than,
            object_size_less_than,
            prefix,
            tags,
        }) => Filter {
            prefix: prefix.unwrap_or_default(),
            tags: tags.unwrap_or_default().into_iter().map(tag_pair).collect(),
            size_greater_than: size(object_size_greater_than)?,
            size_less_than: size(object_size_less_than)?,
            legacy_prefix: false,
        },
        None => Filter {
            prefix: filter.prefix.unwrap_or_default(),
            tags: filter.tag.into_iter().map(tag_pair).collect(),
            size_greater_than: size(filter.object_size_greater_than)?,
            size_less_than: size(filter.object_size_less_than)?,
            legacy_prefix: false,
        },
    };
    tags::check(&out.tags, TagOwner::Bucket)?;
    if let (Some(gt), Some(lt)) = (out.size_greater_than, out.size_less_than)
        && gt >= lt
    {
        return Err(s3_error!(
            InvalidArgument,
            "ObjectSizeGreaterThan must be less than ObjectSizeLessThan"
        ));
    }
    Ok(out)
}

fn size(bytes: Option<i64>) -> S3Result<Option<u64>> {
    match bytes {
        None => Ok(None),
        Some(b) if b >= 0 => Ok(Some(b as u64)),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "an object size in a filter cannot be negative"
        )),
    }
}

fn expiration_from_dto(e: LifecycleExpiration) -> S3Result<Expiration> {
    if e.expired_object_delete_marker.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "Cairn keeps no delete markers: ExpiredObjectDeleteMarker is not supported"
        ));
    }
    match (e.days, e.date) {
        (Some(_), Some(_)) | (None, None) => Err(s3_error!(
            MalformedXML,
            "an Expiration has either Days or Date"
        )),
        (days @ Some(_), None) => Ok(Expiration::Days(
            positive_days(days, "Expiration")?.expect("days were given"),
        )),
        (None, Some(date)) => {
            let ms = ms_of(&date);
            if !ms.is_multiple_of(DAY_MS) {
                return Err(s3_error!(InvalidArgument, "'Date' must be at midnight GMT"));
            }
            Ok(Expiration::DateMs(ms))
        }
    }
}

/// A stored configuration as GetBucketLifecycleConfiguration answers it.
pub fn to_dto(lifecycle: &Lifecycle) -> Vec<LifecycleRule> {
    lifecycle
        .rules
        .iter()
        .map(|r| {
            let f = &r.filter;
            let tag_set: Vec<Tag> = tags::to_tag_set(&f.tags);
            let conditions = usize::from(!f.prefix.is_empty())
                + f.tags.len()
                + usize::from(f.size_greater_than.is_some())
                + usize::from(f.size_less_than.is_some());
            let filter = if f.legacy_prefix {
                None
            } else if conditions > 1 {
                Some(LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: (!f.prefix.is_empty()).then(|| f.prefix.clone()),
                        tags: (!tag_set.is_empty()).then_some(tag_set),
                        object_size_greater_than: f.size_greater_than.map(|b| b as i64),
                        object_size_less_than: f.size_less_than.map(|b| b as i64),
                    }),
                    ..Default::default()
                })
            } else {
                Some(LifecycleRuleFilter {
                    prefix: Some(f.prefix.clone()).filter(|p| !p.is_empty() || conditions == 0),
                    tag: tag_set.into_iter().next(),
                    object_size_greater_than: f.size_greater_than.map(|b| b as i64),
                    object_size_less_than: f.size_less_than.map(|b| b as i64),
                    ..Default::default()
                })
            };
            LifecycleRule {
                id: Some(r.id.clone()),
                status: ExpirationStatus::from_static(if r.enabled {
                    ExpirationStatus::ENABLED
                } else {
                    ExpirationStatus::DISABLED
                }),
                prefix: f.legacy_prefix.then(|| f.prefix.clone()),
                filter,
                expiration: r.expiration.as_ref().map(|e| match e {
                    Expiration::Days(d) => LifecycleExpiration {
                        days: Some(*d as i32),
                        ..Default::default()
                    },
                    Expiration::DateMs(ms) => LifecycleExpiration {
                        date: Some(timestamp(*ms)),
                        ..Default::default()
                    },
                }),
                abort_incomplete_multipart_upload: r.abort_upload_days.map(|d| {
                    AbortIncompleteMultipartUpload {
                        days_after_initiation: Some(d as i32),
                    }
                }),
                noncurrent_version_expiration: None,
                noncurrent_version_transitions: None,
                transitions: None,
            }
        })
        .collect()
}

/// The first midnight (UTC) at least `days` days after `from_ms`.
fn midnight_after(from_ms: u64, days: u32) -> u64 {
    (from_ms + u64::from(days) * DAY_MS).div_ceil(DAY_MS) * DAY_MS
}

impl Filter {
    fn matches(&self, key: &str, size: u64, tags: &Tags) -> bool {
        key.starts_with(&self.prefix)
            && self.tags.iter().all(|t| tags.contains(t))
            && self.size_greater_than.is_none_or(|gt| size > gt)
            && self.size_less_than.is_none_or(|lt| size < lt)
    }
}

impl Lifecycle {
    /// Whether an enabled rule expires this object at `now_ms`.
    pub fn expires(
        &self,
        key: &str,
        size: u64,
        tags: &Tags,
        modified_ms: u64,
        now_ms: u64,
    ) -> bool {
        self.rules.iter().any(|r| {
            r.enabled
                && r.filter.matches(key, size, tags)
                && match r.expiration {
                    Some(Expiration::Days(days)) => now_ms >= midnight_after(modified_ms, days),
                    Some(Expiration::DateMs(date)) => now_ms >= date,
                    None => false,
                }
        })
    }

    /// Whether an enabled rule aborts an upload of `key` begun at `initiated_ms`.
    pub fn aborts(&self, key: &str, initiated_ms: u64, now_ms: u64) -> bool {
        self.rules.iter().any(|r| {
            r.enabled
                && key.starts_with(&r.filter.prefix)
                && r.abort_upload_days
                    .is_some_and(|days| now_ms >= midnight_after(initiated_ms, days))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    fn nexus_rule() -> LifecycleRule {
        LifecycleRule {
            id: Some("Expire soft-deleted blobstore objects".into()),
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            filter: Some(LifecycleRuleFilter {
                tag: Some(Tag {
                    key: Some("deleted".into()),
                    value: Some("true".into()),
                }),
                ..Default::default()
            }),
            expiration: Some(LifecycleExpiration {
                days: Some(3),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            transitions: None,
        }
    }

    fn config(rules: Vec<LifecycleRule>) -> BucketLifecycleConfiguration {
        BucketLifecycleConfiguration { rules }
    }

    #[test]
    fn a_tag_rule_expires_tagged_objects_at_midnight_after_its_days() {
        let lifecycle = from_dto(config(vec![nexus_rule()])).unwrap();
        let deleted = vec![("deleted".to_string(), "true".to_string())];
        let modified = 10 * DAY_MS + 5;
        assert!(!lifecycle.expires("a", 1, &deleted, modified, 13 * DAY_MS));
        assert!(lifecycle.expires("a", 1, &deleted, modified, 14 * DAY_MS));
        assert!(!lifecycle.expires("a", 1, &Vec::new(), modified, 100 * DAY_MS));
        assert_eq!(to_dto(&lifecycle), vec![nexus_rule()]);
    }

    #[test]
    fn prefix_size_and_abort_rules_apply_as_written() {
        let rule = LifecycleRule {
            id: Some("tmp".into()),
            filter: Some(LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some("tmp/".into()),
                    object_size_greater_than: Some(10),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            expiration: Some(LifecycleExpiration {
                date: Some(timestamp(20 * DAY_MS)),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: Some(AbortIncompleteMultipartUpload {
                days_after_initiation: Some(1),
            }),
            ..nexus_rule()
        };
        let lifecycle = from_dto(config(vec![rule.clone()])).unwrap();
        let none = Vec::new();
        assert!(lifecycle.expires("tmp/x", 11, &none, 0, 20 * DAY_MS));
        assert!(!lifecycle.expires("tmp/x", 10, &none, 0, 20 * DAY_MS));
        assert!(!lifecycle.expires("keep/x", 11, &none, 0, 20 * DAY_MS));
        assert!(!lifecycle.expires("tmp/x", 11, &none, 0, 20 * DAY_MS - 1));
        assert!(lifecycle.aborts("tmp/y", 5, 2 * DAY_MS));
        assert!(!lifecycle.aborts("tmp/y", 5, DAY_MS + 4));
        assert_eq!(to_dto(&lifecycle), vec![rule]);
        let disabled = LifecycleRule {
            status: ExpirationStatus::from_static(ExpirationStatus::DISABLED),
            ..nexus_rule()
        };
        let lifecycle = from_dto(config(vec![disabled])).unwrap();
        let deleted = vec![("deleted".to_string(), "true".to_string())];
        assert!(!lifecycle.expires("a", 1, &deleted, 0, 100 * DAY_MS));
    }

    #[test]
    fn configurations_s3_refuses_are_refused_with_its_errors() {
        use S3ErrorCode as C;
        let cases: Vec<(LifecycleRule, C)> = vec![
            (
                LifecycleRule {
                    expiration: Some(LifecycleExpiration {
                        days: Some(0),
                        ..Default::default()
                    }),
                    ..nexus_rule()
                },
                C::InvalidArgument,
            ),
            (
                LifecycleRule {
                    expiration: Some(LifecycleExpiration {
                        date: Some(timestamp(DAY_MS + 1)),
                        ..Default::default()
                    }),
                    ..nexus_rule()
                },
                C::InvalidArgument,
            ),
            (
                LifecycleRule {
                    expiration: None,
                    ..nexus_rule()
                },
                C::InvalidRequest,
            ),
            (
                LifecycleRule {
                    abort_incomplete_multipart_upload: Some(AbortIncompleteMultipartUpload {
                        days_after_initiation: Some(1),
                    }),
                    ..nexus_rule()
                },
                C::InvalidArgument,
            ),
            (
                LifecycleRule {
                    id: Some("x".repeat(256)),
                    ..nexus_rule()
                },
                C::InvalidArgument,
            ),
            (
                LifecycleRule {
                    prefix: Some("a/".into()),
                    ..nexus_rule()
                },
                C::MalformedXML,
            ),
            (
                LifecycleRule {
                    filter: None,
                    ..nexus_rule()
                },
                C::MalformedXML,
            ),
            (
                LifecycleRule {
                    noncurrent_version_expiration: Some(Default::default()),
                    ..nexus_rule()
                },
                C::NotImplemented,
            ),
        ];
        for (rule, code) in cases {
            let e = from_dto(config(vec![rule.clone()])).unwrap_err();
            assert_eq!(*e.code(), code, "{rule:?}");
        }
        let e = from_dto(config(vec![nexus_rule(), nexus_rule()])).unwrap_err();
        assert_eq!(*e.code(), C::InvalidArgument);
        assert_eq!(
            *from_dto(config(vec![])).unwrap_err().code(),
            C::MalformedXML
        );
    }
}
