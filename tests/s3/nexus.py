#!/usr/bin/env python3
"""Nexus Repository's S3 blob store, replayed call by call against Cairn's S3 front.

Each step below is one call Nexus makes (through the AWS SDK for Java v1), in the order its
S3 blob store makes them, named after the Nexus code that makes it: start (the bucket checks,
the lifecycle rule that expires soft-deleted blobs, metadata.properties), writing a blob
(single PutObject under 10 MiB, multipart in 10 MiB parts above), reading it, soft delete
(the properties rewritten, both objects tagged deleted=true), undelete (an empty tag set),
hard delete (DeleteObjects of both keys), the listing of content/ with a HEAD per properties
file, a copy (CopyObject, and UploadPartCopy for 5 MiB and over), and removing the blob store.
The sequence was read from Nexus's public source (the nexus-blobstore-s3 plugin, release
3.77): S3BlobStore, BucketManager, S3PropertiesFile, ProducerConsumerUploader, ParallelCopier.

Usage (scripts/s3-clients-test starts a cluster and runs it with this environment):
    CAIRN_S3_ENDPOINT=http://127.0.0.1:9401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        python3 tests/s3/nexus.py

Prints one "ok: ..." line per call and exits 1 at the first that does not answer as Nexus
needs. The bucket is removed at the end (as Nexus removes an emptied blob store's).
"""

import concurrent.futures
import hashlib
import os
import sys
import traceback
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ.get("CAIRN_S3_ENDPOINT", "")
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
MIB = 1024 * 1024
# ProducerConsumerUploader's chunk (nexus.s3.producerConsumerUploader.chunksize) and
# ParallelCopier's (nexus.s3.parallelRequests.chunksize).
UPLOAD_CHUNK_BYTES = 10 * MIB
COPY_CHUNK_BYTES = 5 * MIB
STORE = "nexus-cairn"
PREFIX = "nx/"  # the blob store's bucket prefix
RULE_ID = "Expire soft-deleted objects in blobstore " + STORE


class Failed(Exception):
    pass


def ok(step, operation):
    print("ok: %s: %s" % (step, operation), flush=True)


def check(condition, what):
    if not condition:
        raise Failed(what)


def error_of(call):
    """Runs `call`; returns (HTTP status, S3 error code) of its error, or (200, None)."""
    try:
        call()
        return 200, None
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code")


def client():
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


def does_bucket_exist_v2(s3, bucket):
    """AmazonS3Client.doesBucketExistV2: a GetBucketAcl; 404 is "no", 200/301/403 "yes",
    anything else an exception."""
    status, code = error_of(lambda: s3.get_bucket_acl(Bucket=bucket))
    if status == 404:
        return False
    if status in (200, 301, 403):
        return True
    raise Failed("GetBucketAcl answered %s %s, which doesBucketExistV2 rethrows" % (status, code))


def properties(**entries):
    return "".join("%s=%s\n" % kv for kv in entries.items()).encode()


def blob_keys(blob_id):
    base = "%scontent/vol-%02d/chap-%02d/%s" % (PREFIX, 1 + hash(blob_id) % 43, 1 + hash(blob_id) % 47, blob_id)
    return base + ".bytes", base + ".properties"


def lifecycle_rule(days):
    return {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"And": {"Prefix": PREFIX, "Tags": [{"Key": "deleted", "Value": "true"}]}},
        "Expiration": {"Days": days},
    }


def start(s3, bucket, first):
    step = "BucketManager.prepareStorageLocation"
    check(does_bucket_exist_v2(s3, bucket) == (not first), "checkCredentials")
    ok("BucketManager.checkCredentials", "GetBucketAcl (doesBucketExistV2)")
    if not first:
        status, code = error_of(lambda: s3.get_bucket_policy(Bucket=bucket))
        check((status, code) == (404, "NoSuchBucketPolicy"), "GetBucketPolicy answered %s %s" % (status, code))
        ok("BucketManager.checkBucketOwner", "GetBucketPolicy is NoSuchBucketPolicy")
    if first:
        s3.create_bucket(Bucket=bucket)
        ok(step, "CreateBucket")
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [lifecycle_rule(3)]}
        )
        ok(step, "PutBucketLifecycleConfiguration (expire deleted=true after 3 days)")
    else:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        present = [
            r
            for r in rules
            if r["ID"] == RULE_ID
            and r.get("Expiration", {}).get("Days") == 3
            and r.get("Filter", {}).get("And", {}).get("Tags") == [{"Key": "deleted", "Value": "true"}]
        ]
        check(len(present) == 1, "the lifecycle rule Nexus put is not read back as it wrote it: %r" % rules)
        ok(step, "GetBucketLifecycleConfiguration finds the rule (no PUT needed)")
    metadata = PREFIX + "metadata.properties"
    status, _ = error_of(lambda: s3.head_object(Bucket=bucket, Key=metadata))
    if first:
        check(status == 404, "HeadObject of a missing metadata.properties answered %s" % status)
        ok("S3BlobStore.doStart", "HeadObject metadata.properties is 404")
        s3.put_object(Bucket=bucket, Key=metadata, Body=b"#Sun Dec 06 00:00:00 UTC 2026\ntype=s3/1\n")
        ok("S3BlobStore.doStart", "PutObject metadata.properties")
    else:
        check(status == 200, "HeadObject of metadata.properties answered %s" % status)
        body = s3.get_object(Bucket=bucket, Key=metadata)["Body"].read()
        check(b"type=s3/1" in body, "metadata.properties reads back without its type")
        ok("S3BlobStore.doStart", "HeadObject then GetObject metadata.properties")


def write_blob(s3, bucket, data, temporary=False):
    blob_id = str(uuid.uuid4())
    bytes_key, props_key = blob_keys(blob_id)
    if len(data) < UPLOAD_CHUNK_BYTES:
        s3.put_object(Bucket=bucket, Key=bytes_key, Body=data, ContentType="application/octet-stream")
        ok("ProducerConsumerUploader", "PutObject .bytes (%d bytes)" % len(data))
    else:
        upload_id = s3.create_multipart_upload(
            Bucket=bucket, Key=bytes_key, ContentType="application/octet-stream"
        )["UploadId"]
        chunks = [data[i : i + UPLOAD_CHUNK_BYTES] for i in range(0, len(data), UPLOAD_CHUNK_BYTES)]

        def upload(numbered):
            number, chunk = numbered
            r = s3.upload_part(Bucket=bucket, Key=bytes_key, UploadId=upload_id, PartNumber=number, Body=chunk)
            check(r["ETag"].strip('"') == hashlib.md5(chunk).hexdigest(), "UploadPart's ETag is not its MD5")
            return {"PartNumber": number, "ETag": r["ETag"]}

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            parts = list(pool.map(upload, enumerate(chunks, start=1)))
        s3.complete_multipart_upload(
            Bucket=bucket, Key=bytes_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        ok(
            "ProducerConsumerUploader",
            "CreateMultipartUpload, %d UploadPart in parallel, CompleteMultipartUpload" % len(parts),
        )
    extra = {"Metadata": {"BlobStore.temporary-blob": "true"}} if temporary else {}
    s3.put_object(
        Bucket=bucket,
        Key=props_key,
        Body=properties(**{"@BlobStore.blob-name": "a/b.jar", "size": len(data), "sha1": hashlib.sha1(data).hexdigest()}),
        **extra
    )
    ok("S3PropertiesFile.write", "PutObject .properties" + (" (temporary blob)" if temporary else ""))
    return blob_id


def read_blob(s3, bucket, blob_id, data):
    bytes_key, props_key = blob_keys(blob_id)
    props = s3.get_object(Bucket=bucket, Key=props_key)["Body"].read()
    check(b"size=%d" % len(data) in props, "the properties read back are not those written")
    ok("S3BlobAttributes.load", "GetObject .properties")
    got = s3.get_object(Bucket=bucket, Key=bytes_key)
    body = got["Body"].read()
    check(body == data, "GetObject .bytes gives other bytes")
    ok("S3Blob.getInputStream", "GetObject .bytes (%d bytes, byte for byte)" % len(body))
    head = s3.head_object(Bucket=bucket, Key=bytes_key)
    check(head["ContentLength"] == len(data), "HeadObject .bytes gives another length")
    ok("S3BlobStore.bytesExists", "HeadObject .bytes")


def tags_of(s3, bucket, key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def soft_delete(s3, bucket, blob_id):
    bytes_key, props_key = blob_keys(blob_id)
    props = s3.get_object(Bucket=bucket, Key=props_key)["Body"].read()
    ok("S3BlobStore.expire", "GetObject .properties")
    s3.put_object(Bucket=bucket, Key=props_key, Body=props + properties(deleted="true", deletedReason="test"))
    ok("S3BlobStore.expire", "PutObject .properties with deleted=true")
    for key in (bytes_key, props_key):
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "deleted", "Value": "true"}]})
        ok("S3BlobStore.tagAsDeleted", "PutObjectTagging deleted=true on " + key.rsplit(".", 1)[1])
    s3.get_object(Bucket=bucket, Key=props_key)["Body"].read()
    ok("S3BlobStore.getContentSizeForDeletion", "GetObject .properties")
    # Not a Nexus call: what the lifecycle rule will see.
    check(tags_of(s3, bucket, bytes_key) == {"deleted": "true"}, "the tag did not stick")


def undelete(s3, bucket, blob_id):
    bytes_key, props_key = blob_keys(blob_id)
    for key in (bytes_key, props_key):
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": []})
        ok("S3BlobStore.untagAsDeleted", "PutObjectTagging with an empty TagSet on " + key.rsplit(".", 1)[1])
    props = s3.get_object(Bucket=bucket, Key=props_key)["Body"].read()
    kept = b"".join(l + b"\n" for l in props.splitlines() if not l.startswith((b"deleted", b"deletedReason")))
    s3.put_object(Bucket=bucket, Key=props_key, Body=kept)
    ok("S3BlobStore.doUndelete", "PutObject .properties without deleted")
    check(tags_of(s3, bucket, bytes_key) == {}, "the empty tag set left tags behind")


def hard_delete(s3, bucket, blob_id):
    bytes_key, props_key = blob_keys(blob_id)
    s3.get_object(Bucket=bucket, Key=props_key)["Body"].read()
    ok("S3BlobStore.performHardDelete", "GetObject .properties")
    r = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": bytes_key}, {"Key": props_key}], "Quiet": False}
    )
    check(len(r.get("Deleted", [])) == 2 and not r.get("Errors"), "DeleteObjects did not report both deleted: %r" % r)
    ok("S3BlobStore.batchDelete", "DeleteObjects of .bytes and .properties (2 Deleted)")
    status, _ = error_of(lambda: s3.head_object(Bucket=bucket, Key=bytes_key))
    check(status == 404, "the .bytes of a hard-deleted blob still answers HEAD %s" % status)


def list_blob_ids(s3, bucket):
    """S3BlobStore.getBlobIdStream: ListObjects v1 of content/, marker paging, a HEAD per
    .properties to skip temporary blobs."""
    ids, marker, pages = [], "", 0
    while True:
        r = s3.list_objects(Bucket=bucket, Prefix=PREFIX + "content/", Marker=marker, MaxKeys=3, EncodingType="url")
        pages += 1
        for o in r.get("Contents", []):
            key = o["Key"]
            if key.endswith(".properties"):
                head = s3.head_object(Bucket=bucket, Key=key)
                meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
                if meta.get("blobstore.temporary-blob") != "true":
                    ids.append(key.rsplit("/", 1)[1][: -len(".properties")])
            marker = key
        if not r.get("IsTruncated"):
            break
    ok("S3BlobStore.getBlobIdStream", "ListObjects v1 of content/ (%d pages), HeadObject per .properties" % pages)
    return sorted(ids)


def copy_blob(s3, bucket, blob_id, size):
    src_bytes, src_props = blob_keys(blob_id)
    new_id = str(uuid.uuid4())
    dst_bytes, dst_props = blob_keys(new_id)
    head = s3.head_object(Bucket=bucket, Key=src_bytes)
    ok("ParallelCopier", "HeadObject source .bytes")
    source = {"Bucket": bucket, "Key": src_bytes}
    if head["ContentLength"] < COPY_CHUNK_BYTES:
        s3.copy_object(Bucket=bucket, Key=dst_bytes, CopySource=source)
        ok("ParallelCopier", "CopyObject")
    else:
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=dst_bytes)["UploadId"]
        parts = []
        for number, first in enumerate(range(0, size, COPY_CHUNK_BYTES), start=1):
            last = min(first + COPY_CHUNK_BYTES, size) - 1
            r = s3.upload_part_copy(
                Bucket=bucket,
                Key=dst_bytes,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=source,
                CopySourceRange="bytes=%d-%d" % (first, last),
            )
            parts.append({"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]})
        s3.complete_multipart_upload(
            Bucket=bucket, Key=dst_bytes, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        ok("ParallelCopier", "CreateMultipartUpload, %d UploadPartCopy, CompleteMultipartUpload" % len(parts))
    props = s3.get_object(Bucket=bucket, Key=src_props)["Body"].read()
    s3.put_object(Bucket=bucket, Key=dst_props, Body=props)
    ok("S3BlobStore.copy", "PutObject the copy's .properties")
    return new_id


def remove_store(s3, bucket):
    left = s3.list_objects(Bucket=bucket, Prefix=PREFIX + "content/").get("Contents", [])
    for o in left:
        s3.delete_object(Bucket=bucket, Key=o["Key"])
    s3.delete_object(Bucket=bucket, Key=PREFIX + "metadata.properties")
    ok("S3BlobStore.remove", "DeleteObject metadata.properties")
    r = s3.list_objects(Bucket=bucket, MaxKeys=1)
    check(not r.get("Contents"), "the bucket is not empty after the blob store's removal")
    ok("BucketManager.deleteStorageLocation", "ListObjects max-keys=1 is empty")
    s3.delete_bucket(Bucket=bucket)
    ok("BucketManager.deleteStorageLocation", "DeleteBucket")


def main():
    if not ENDPOINT:
        print("nexus: set CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", file=sys.stderr)
        return 2
    print("Nexus's S3 blob store calls against %s" % ENDPOINT, flush=True)
    s3 = client()
    bucket = "nexus-" + uuid.uuid4().hex[:12]
    made = False
    try:
        start(s3, bucket, first=True)
        made = True
        start(s3, bucket, first=False)
        small, large = os.urandom(200_000), os.urandom(25 * MIB + 123)
        small_id = write_blob(s3, bucket, small)
        large_id = write_blob(s3, bucket, large)
        temp_id = write_blob(s3, bucket, os.urandom(1000), temporary=True)
        read_blob(s3, bucket, small_id, small)
        read_blob(s3, bucket, large_id, large)
        soft_delete(s3, bucket, small_id)
        undelete(s3, bucket, small_id)
        soft_delete(s3, bucket, small_id)
        copy_small = copy_blob(s3, bucket, small_id, len(small))
        copy_large = copy_blob(s3, bucket, large_id, len(large))
        read_blob(s3, bucket, copy_large, large)
        listed = list_blob_ids(s3, bucket)
        check(
            listed == sorted([small_id, large_id, copy_small, copy_large]) and temp_id not in listed,
            "the listing gives other blob ids: %r" % listed,
        )
        hard_delete(s3, bucket, large_id)
        check(does_bucket_exist_v2(s3, bucket), "the health check")
        ok("S3BlobStore.isStorageAvailable", "GetBucketAcl (doesBucketExistV2)")
        status, code = error_of(
            lambda: s3.put_object(Bucket=bucket, Key=PREFIX + "sse", Body=b"x", ServerSideEncryption="AES256")
        )
        check((status, code) == (501, "NotImplemented"), "an SSE-S3 PutObject answered %s %s" % (status, code))
        ok("EncryptingAmazonS3Client (s3ManagedEncryption)", "PutObject with SSE is refused NotImplemented")
        remove_store(s3, bucket)
        made = False
        print("nexus: every call answered as Nexus needs", flush=True)
        return 0
    except Failed as e:
        print("FAIL: %s" % e, file=sys.stderr, flush=True)
        return 1
    except Exception:
        print("FAIL: unexpected error:", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
    finally:
        if made:
            try:
                for o in s3.list_objects(Bucket=bucket).get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=o["Key"])
                s3.delete_bucket(Bucket=bucket)
            except ClientError:
                pass


if __name__ == "__main__":
    sys.exit(main())
