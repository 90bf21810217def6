//! Who may do what, as S3 states it, and what Cairn refuses rather than pretend: plain
//! functions, no IO.
//!
//! **Permissions.** Each S3 operation needs a permission on its bucket ([`need_of`]): reading
//! objects, listings and a bucket's settings needs `read`; writing, copying and deleting
//! objects, their tags and multipart uploads need `write` (and a copy `read` on its source's
//! bucket); changing a bucket's settings or deleting it needs `owner`. An operation not named
//! here needs `owner`. Who holds what is `super::keys`.
//!
//! **Ownership and ACLs.** Every bucket and object belongs to one owner, the cluster's account
//! (`OWNER_ID`), and the only access control list is the owner's `FULL_CONTROL`: S3's model
//! for a bucket whose object ownership is "bucket owner enforced", the default for new AWS
//! buckets. Reading an ACL answers that list; setting one is accepted when it says the same
//! (the canned `private` or `bucket-owner-full-control`, or a policy granting the owner
//! `FULL_CONTROL` alone) and refused with `AccessControlListNotSupported` otherwise, as AWS
//! refuses it on such a bucket. Nothing is stored: there is nothing else to remember.
//!
//! **Server-side encryption.** Cairn stores what it is sent and names it by its hash, so a
//! request asking for SSE-S3, SSE-KMS or SSE-C is refused (`NotImplemented`) rather than
//! answered 200 over plaintext; a read that supplies an SSE-C key is refused as AWS refuses it
//! for an object that was not stored with one.

use cairn_core::keys::Permission as KeyPermission;
use s3s::dto::*;
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

use super::keys::Need;

/// The account every bucket and object belongs to.
pub(super) const OWNER_ID: &str = "cairn";

/// The owner, as S3's answers name it.
pub(super) fn owner() -> Owner {
    Owner {
        display_name: Some(OWNER_ID.into()),
        id: Some(OWNER_ID.into()),
    }
}

/// The one access control list: the owner has `FULL_CONTROL`.
pub(super) fn owner_grants() -> Grants {
    vec![Grant {
        grantee: Some(Grantee {
            display_name: Some(OWNER_ID.into()),
            email_address: None,
            id: Some(OWNER_ID.into()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }]
}

/// What a request says about access control: a canned ACL, `x-amz-grant-*` headers, an
/// `AccessControlPolicy` body.
#[derive(Default)]
pub(super) struct AclRequest<'a> {
    pub canned: Option<&'a str>,
    pub grant_headers: bool,
    pub policy: Option<&'a AccessControlPolicy>,
}

impl<'a> AclRequest<'a> {
    /// From an operation's canned ACL, its grant headers (set or not) and its policy body.
    pub fn new(
        canned: Option<&'a str>,
        grants: &[&Option<String>],
        policy: Option<&'a AccessControlPolicy>,
    ) -> AclRequest<'a> {
        AclRequest {
            canned,
            grant_headers: grants.iter().any(|g| g.is_some()),
            policy,
        }
    }
}

/// Accepts an ACL that gives the owner `FULL_CONTROL` and nobody anything (or no ACL at all);
/// refuses any other with `AccessControlListNotSupported`.
pub(super) fn check_acl(request: &AclRequest<'_>) -> S3Result<()> {
    let refuse = |what: &str| {
        Err(s3_error!(
            AccessControlListNotSupported,
            "The bucket does not allow ACLs: {what} cannot be honoured; every bucket and object \
             belongs to its owner alone (canned ACL private)"
        ))
    };
    if let Some(canned) = request.canned
        && !matches!(
            canned,
            ObjectCannedACL::PRIVATE | ObjectCannedACL::BUCKET_OWNER_FULL_CONTROL
        )
    {
        return refuse(&format!("the canned ACL {canned:?}"));
    }
    if request.grant_headers {
        return refuse("an x-amz-grant-* header");
    }
    if let Some(policy) = request.policy {
        let owner_only = policy.grants.iter().flatten().all(|g| {
            g.permission.as_ref().map(Permission::as_str) == Some(Permission::FULL_CONTROL)
                && g.grantee.as_ref().is_some_and(|e| {
                    e.type_.as_str() == Type::CANONICAL_USER && e.id.as_deref() == Some(OWNER_ID)
                })
        });
        if !owner_only {
            return refuse("a grant to anyone but the owner, or of less than FULL_CONTROL");
        }
    }
    Ok(())
}

/// What a write asks of server-side encryption.
#[derive(Default)]
pub(super) struct SseRequest<'a> {
    /// `x-amz-server-side-encryption` (SSE-S3, SSE-KMS).
    pub algorithm: Option<&'a str>,
    /// `x-amz-server-side-encryption-aws-kms-key-id` and friends.
    pub kms: bool,
    /// `x-amz-server-side-encryption-customer-*` (SSE-C).
    pub customer_key: bool,
}

/// Refuses a write that asks for server-side encryption.
pub(super) fn refuse_sse(request: &SseRequest<'_>) -> S3Result<()> {
    let asked = match (request.algorithm, request.kms, request.customer_key) {
        (_, _, true) => "SSE-C (x-amz-server-side-encryption-customer-*)".to_string(),
        (_, true, _) => "SSE-KMS (x-amz-server-side-encryption-aws-kms-key-id)".to_string(),
        (Some(algorithm), _, _) => format!("x-amz-server-side-encryption: {algorithm}"),
        (None, false, false) => return Ok(()),
    };
    Err(s3_error!(
        NotImplemented,
        "server-side encryption is not supported ({asked}): Cairn stores the bytes it is sent; \
         encrypt them in the client"
    ))
}

/// Refuses a read that supplies an SSE-C key: no object is stored with one.
pub(super) fn refuse_sse_read(customer_key: bool) -> S3Result<()> {
    if customer_key {
        return Err(s3_error!(
            InvalidRequest,
            "The encryption parameters are not applicable to this object"
        ));
    }
    Ok(())
}

/// The ACL an input asks for: its canned ACL, its five `x-amz-grant-*` headers and `$policy`
/// (the inputs of CreateBucket, PutBucketAcl and PutObjectAcl name them alike).
macro_rules! acl_request {
    ($input:expr, $policy:expr) => {
        $crate::s3::access::AclRequest::new(
            $input.acl.as_ref().map(|a| a.as_str()),
            &[
                &$input.grant_full_control,
                &$input.grant_read,
                &$input.grant_read_acp,
                &$input.grant_write,
                &$input.grant_write_acp,
            ],
            $policy,
        )
    };
}
pub(super) use acl_request;

/// Checks the ACL and encryption headers of a write that creates an object: the inputs of
/// PutObject, CopyObject and CreateMultipartUpload name them alike.
macro_rules! check_object_write {
    ($input:expr) => {{
        let input = &$input;
        $crate::s3::access::check_acl(&$crate::s3::access::AclRequest::new(
            input.acl.as_ref().map(|a| a.as_str()),
            &[
                &input.grant_full_control,
                &input.grant_read,
                &input.grant_read_acp,
                &input.grant_write_acp,
            ],
            None,
        ))
        .and_then(|()| {
            $crate::s3::access::refuse_sse(&$crate::s3::access::SseRequest {
                algorithm: input.server_side_encryption.as_ref().map(|s| s.as_str()),
                kms: input.ssekms_key_id.is_some()
                    || input.ssekms_encryption_context.is_some()
                    || input.bucket_key_enabled == Some(true),
                customer_key: input.sse_customer_algorithm.is_some()
                    || input.sse_customer_key.is_some(),
            })
        })
    }};
}
pub(super) use check_object_write;

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    fn code(result: S3Result<()>) -> Option<S3ErrorCode> {
        result.err().map(|e| e.code().clone())
    }

    #[test]
    fn only_the_owners_full_control_is_accepted() {
        let canned = |c| AclRequest {
            canned: Some(c),
            ..Default::default()
        };
        assert!(check_acl(&AclRequest::default()).is_ok());
        assert!(check_acl(&canned("private")).is_ok());
        assert!(check_acl(&canned("bucket-owner-full-control")).is_ok());
        for refused in ["public-read", "public-read-write", "authenticated-read"] {
            assert_eq!(
                code(check_acl(&canned(refused))),
                Some(S3ErrorCode::AccessControlListNotSupported),
                "{refused}"
            );
        }
        let grants = AclRequest {
            grant_headers: true,
            ..Default::default()
        };
        assert!(check_acl(&grants).is_err());

        let policy = |id: &str, permission: &'static str| AccessControlPolicy {
            grants: Some(vec![Grant {
                grantee: Some(Grantee {
                    display_name: None,
                    email_address: None,
                    id: Some(id.into()),
                    type_: Type::from_static(Type::CANONICAL_USER),
                    uri: None,
                }),
                permission: Some(Permission::from_static(permission)),
            }]),
            owner: Some(owner()),
        };
        let with = |p: &AccessControlPolicy| {
            check_acl(&AclRequest {
                policy: Some(p),
                ..Default::default()
            })
        };
        assert!(with(&policy(OWNER_ID, Permission::FULL_CONTROL)).is_ok());
        assert!(with(&policy("someone-else", Permission::FULL_CONTROL)).is_err());
        assert!(with(&policy(OWNER_ID, Permission::READ)).is_err());
        let answered = AccessControlPolicy {
            grants: Some(owner_grants()),
            owner: Some(owner()),
        };
        assert!(
            with(&answered).is_ok(),
            "what GetBucketAcl answers is accepted"
        );
    }

    #[test]
    fn server_side_encryption_is_refused_and_plain_writes_pass() {
        assert!(refuse_sse(&SseRequest::default()).is_ok());
        for request in [
            SseRequest {
                algorithm: Some("AES256"),
                ..Default::default()
            },
            SseRequest {
                algorithm: Some("aws:kms"),
                kms: true,
                ..Default::default()
            },
            SseRequest {
                customer_key: true,
                ..Default::default()
            },
        ] {
            assert_eq!(
                code(refuse_sse(&request)),
                Some(S3ErrorCode::NotImplemented)
            );
        }
        assert!(refuse_sse_read(false).is_ok());
        assert_eq!(
            code(refuse_sse_read(true)),
            Some(S3ErrorCode::InvalidRequest)
        );
    }
}

/// What an operation (by its S3 name) on `path` needs of its key; `copy_source` is the
/// request's `x-amz-copy-source`, if any.
pub(super) fn need_of(operation: &str, path: &S3Path, copy_source: Option<&str>) -> Need {
    let bucket = match path {
        S3Path::Root => return Need::AnyKey,
        S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket.to_string(),
    };
    let permission = match operation {
        "CreateBucket" => return Need::CreateBucket,
        "GetObject"
        | "HeadObject"
        | "HeadBucket"
        | "GetBucketLocation"
        | "ListObjects"
        | "ListObjectsV2"
        | "ListMultipartUploads"
        | "ListParts"
        | "GetObjectTagging"
        | "GetObjectAttributes"
        | "GetObjectAcl"
        | "GetBucketAcl"
        | "GetBucketTagging"
        | "GetBucketPolicy"
        | "GetBucketVersioning"
        | "GetBucketEncryption"
        | "GetBucketLifecycleConfiguration" => KeyPermission::Read,
        "PutObject"
        | "CopyObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "PutObjectTagging"
        | "DeleteObjectTagging"
        | "PutObjectAcl" => KeyPermission::Write,
        _ => KeyPermission::Owner,
    };
    let source = match operation {
        "CopyObject" | "UploadPartCopy" => copy_source
            .and_then(|text| CopySource::parse(text).ok())
            .map(|source| match source {
                CopySource::Bucket { bucket, .. } => bucket.to_string(),
                // An access point or outpost is refused by the copy itself; no bucket of
                // ours is read.
                _ => String::new(),
            }),
        _ => None,
    };
    Need::On {
        bucket,
        permission,
        source,
    }
}

#[cfg(test)]
mod need_tests {
    use super::*;

    fn object(bucket: &str) -> S3Path {
        S3Path::Object {
            bucket: bucket.into(),
            key: "k".into(),
        }
    }

    #[test]
    fn reads_need_read_writes_need_write_and_the_rest_needs_owner() {
        let on = |bucket: &str, permission| Need::On {
            bucket: bucket.into(),
            permission,
            source: None,
        };
        assert_eq!(need_of("ListBuckets", &S3Path::Root, None), Need::AnyKey);
        let b = S3Path::Bucket { bucket: "b".into() };
        assert_eq!(need_of("CreateBucket", &b, None), Need::CreateBucket);
        assert_eq!(
            need_of("GetObject", &object("b"), None),
            on("b", KeyPermission::Read)
        );
        assert_eq!(
            need_of("ListObjectsV2", &b, None),
            on("b", KeyPermission::Read)
        );
        assert_eq!(
            need_of("PutObject", &object("b"), None),
            on("b", KeyPermission::Write)
        );
        assert_eq!(
            need_of("DeleteObjects", &b, None),
            on("b", KeyPermission::Write)
        );
        assert_eq!(
            need_of("DeleteBucket", &b, None),
            on("b", KeyPermission::Owner)
        );
        assert_eq!(
            need_of("PutBucketLifecycleConfiguration", &b, None),
            on("b", KeyPermission::Owner)
        );
        assert_eq!(
            need_of("SomethingNew", &b, None),
            on("b", KeyPermission::Owner)
        );
    }

    #[test]
    fn a_copy_needs_read_on_its_source_bucket() {
        let need = need_of(
            "CopyObject",
            &object("dst"),
            Some("/src/some%20key?versionId=x"),
        );
        assert_eq!(
            need,
            Need::On {
                bucket: "dst".into(),
                permission: KeyPermission::Write,
                source: Some("src".into()),
            }
        );
        let need = need_of("UploadPartCopy", &object("dst"), Some("src/k"));
        assert!(matches!(need, Need::On { source: Some(s), .. } if s == "src"));
    }
}
