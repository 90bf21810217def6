#!/usr/bin/env python3
"""Access keys and buckets managed online, with the `cairn` command and real S3 clients.

Against the running six-node test cluster, with boto3 (the configuration file's key is the
seed) and the AWS CLI:
  - `cairn key create` makes keys that sign requests on every node at once, no restart;
  - `cairn key allow`, `deny` and `delete` take effect on every node within the refresh
    interval (S3_KEYS_REFRESH_MS, 1 s; waited for at most 10 s, and the time reported);
  - a key with no permission on a bucket gets AccessDenied for reads and writes, and
    ListBuckets does not show the bucket; `cairn key allow` gives read, then write, on every
    node; read does not allow writing, write does not allow changing the bucket's settings;
  - a key made with --create-buckets owns the buckets it creates, and cannot take another's;
  - a copy needs read on its source's bucket;
  - `cairn bucket create|list|info|delete`; deleting a bucket that holds objects is refused
    with exit status 1;
  - a secret is never on a node's disk in plain text, nor in any node's log.

Run by scripts/s3-clients-test, with CAIRN_BIN, CAIRN_CLUSTER_DIR (client.toml, data/,
logs/), CAIRN_S3_ENDPOINTS and the seed key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
Prints "ok: ..." per check and exits 1 at the first failure.
"""

import os
import subprocess
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CAIRN = os.environ["CAIRN_BIN"]
DIR = os.environ["CAIRN_CLUSTER_DIR"]
ENDPOINTS = os.environ["CAIRN_S3_ENDPOINTS"].split(",")
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
AWS_CLI = os.environ.get("AWS_CLI", "aws")
# How long a withdrawal may take to reach every node: the refresh interval is 1 s.
PROPAGATION_WAIT_S = 10


class Failed(Exception):
    pass


def ok(what):
    print("ok: " + what, flush=True)


def check(condition, what):
    if not condition:
        raise Failed(what)


def cairn(*args, expect=0):
    run = subprocess.run(
        [CAIRN, "--client", os.path.join(DIR, "client.toml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode != expect:
        raise Failed(
            "cairn %s exited %d (expected %d): %s%s"
            % (" ".join(args), run.returncode, expect, run.stdout, run.stderr)
        )
    return run.stdout + run.stderr


def create_key(name, *flags):
    out = cairn("key", "create", name, *flags)
    fields = dict(
        line.split(" = ", 1) for line in out.splitlines() if " = " in line
    )
    return fields["access_key"].strip('"'), fields["secret_key"].strip('"')


def s3(endpoint, key=None):
    access, secret = key or (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


def code_of(call):
    """The S3 error code of `call`, or None if it succeeded."""
    try:
        call()
        return None
    except ClientError as e:
        return e.response["Error"].get("Code")


def on_every_node(key, what, call, expected):
    """`call(client)` answers `expected` (an error code, or None) on every node."""
    for endpoint in ENDPOINTS:
        got = code_of(lambda: call(s3(endpoint, key)))
        check(got == expected, "%s through %s: %s, expected %s" % (what, endpoint, got, expected))
    ok("%s: %s on all %d nodes" % (what, expected or "allowed", len(ENDPOINTS)))


def within_propagation(key, what, call, expected):
    """Waits until every node answers `expected`; returns the seconds it took."""
    start = time.monotonic()
    while True:
        got = [code_of(lambda: call(s3(e, key))) for e in ENDPOINTS]
        if all(g == expected for g in got):
            took = time.monotonic() - start
            ok("%s: %s on every node %.1f s after the command" % (what, expected or "allowed", took))
            return took
        if time.monotonic() - start > PROPAGATION_WAIT_S:
            raise Failed("%s: after %d s the nodes answer %s" % (what, PROPAGATION_WAIT_S, got))
        time.sleep(0.2)


def bucket_names(client):
    return [b["Name"] for b in client.list_buckets().get("Buckets", [])]


def main():
    seed = s3(ENDPOINTS[0])
    shared, own = "keys-shared", "keys-owned"
    seed.create_bucket(Bucket=shared)
    seed.put_object(Bucket=shared, Key="a.jar", Body=b"artifact bytes")
    ok("the configuration file's key created %s and wrote to it" % shared)

    app = create_key("app")
    builder = create_key("builder", "--create-buckets")
    secrets = [app[1], builder[1]]
    ok("cairn key create made %s and %s" % (app[0], builder[0]))

    get = lambda c: c.get_object(Bucket=shared, Key="a.jar")["Body"].read()
    put = lambda c: c.put_object(Bucket=shared, Key="b.jar", Body=b"more")
    on_every_node(app, "GetObject without a permission", get, "AccessDenied")
    on_every_node(app, "PutObject without a permission", put, "AccessDenied")
    check(shared not in bucket_names(s3(ENDPOINTS[1], app)), "ListBuckets shows a bucket the key may not use")
    ok("ListBuckets by a key without permissions hides %s" % shared)
    on_every_node(app, "CreateBucket without --create-buckets", lambda c: c.create_bucket(Bucket="keys-nope"), "AccessDenied")

    cairn("key", "allow", app[0], shared, "read")
    within_propagation(app, "GetObject after cairn key allow read", get, None)
    check(get(s3(ENDPOINTS[2], app)) == b"artifact bytes", "read returned other bytes")
    on_every_node(app, "PutObject with read", put, "AccessDenied")
    check(shared in bucket_names(s3(ENDPOINTS[3], app)), "ListBuckets hides a bucket the key may read")
    ok("ListBuckets shows %s to a key that may read it" % shared)

    cairn("key", "allow", app[0], shared, "write")
    within_propagation(app, "PutObject after cairn key allow write", put, None)
    tagging = {"TagSet": [{"Key": "team", "Value": "x"}]}
    on_every_node(
        app,
        "PutBucketTagging with write",
        lambda c: c.put_bucket_tagging(Bucket=shared, Tagging=tagging),
        "AccessDenied",
    )

    # A key that may create buckets owns the ones it creates, and only those.
    owner = s3(ENDPOINTS[4], builder)
    owner.create_bucket(Bucket=own)
    owner.put_object(Bucket=own, Key="x", Body=b"x")
    owner.put_bucket_tagging(Bucket=own, Tagging=tagging)
    ok("a key with --create-buckets created %s, wrote to it and set its tags" % own)
    check(
        code_of(lambda: owner.create_bucket(Bucket=shared)) == "BucketAlreadyExists",
        "CreateBucket of another's bucket is not BucketAlreadyExists",
    )
    ok("CreateBucket of another's bucket: BucketAlreadyExists")
    on_every_node(app, "GetObject on another key's bucket", lambda c: c.get_object(Bucket=own, Key="x"), "AccessDenied")
    copy = lambda c: c.copy_object(Bucket=shared, Key="c.jar", CopySource={"Bucket": own, "Key": "x"})
    check(code_of(lambda: copy(s3(ENDPOINTS[0], app))) == "AccessDenied", "a copy from a bucket the key may not read")
    cairn("key", "allow", app[0], own, "read")
    within_propagation(app, "CopyObject after cairn key allow read on the source", copy, None)
    ok("CopyObject needs read on its source's bucket")

    # The AWS CLI, with the managed key.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=app[0], AWS_SECRET_ACCESS_KEY=app[1])
    cli = subprocess.run(
        [AWS_CLI, "--endpoint-url", ENDPOINTS[5], "s3", "cp", "s3://%s/a.jar" % shared, "-"],
        capture_output=True, env=env, timeout=60,
    )
    check(cli.returncode == 0 and cli.stdout == b"artifact bytes", "aws s3 cp with a managed key: %r" % (cli.stderr,))
    cli = subprocess.run(
        [AWS_CLI, "--endpoint-url", ENDPOINTS[5], "s3", "cp", "-", "s3://%s/cli.jar" % own],
        input=b"no", capture_output=True, env=env, timeout=60,
    )
    check(cli.returncode != 0 and b"AccessDenied" in cli.stderr, "aws s3 cp to a read-only bucket: %r" % (cli.stderr,))
    ok("the AWS CLI reads with a managed key and is refused a write without permission")

    listed = cairn("key", "list")
    check(app[0] in listed and "%s:write" % shared in listed and "%s:read" % own in listed, "key list: " + listed)
    check(all(s not in listed for s in secrets), "key list shows a secret")
    ok("cairn key list shows the keys and permissions, no secret")
    info = cairn("bucket", "info", shared)
    check("objects: 3," in info and app[0] + ":write" in info, "bucket info: " + info)
    ok("cairn bucket info counts 3 objects and names the key")

    # Withdrawal and deletion reach every node within the refresh interval.
    cairn("key", "deny", app[0], shared)
    within_propagation(app, "GetObject after cairn key deny", get, "AccessDenied")
    cairn("key", "delete", app[0])
    within_propagation(app, "ListBuckets after cairn key delete", lambda c: c.list_buckets(), "InvalidAccessKeyId")
    check(app[0] not in cairn("key", "list"), "a deleted key is still listed")

    # Buckets by command.
    cairn("bucket", "create", "keys-cmd")
    check("keys-cmd" in bucket_names(seed), "a bucket made by cairn bucket create is not listed by S3")
    out = cairn("bucket", "delete", shared, expect=1)
    check("holds objects" in out, "deleting a bucket with objects: " + out)
    ok("cairn bucket delete of a bucket with objects: refused, exit 1")
    for key in ("a.jar", "b.jar", "c.jar"):
        seed.delete_object(Bucket=shared, Key=key)
    cairn("bucket", "delete", shared)
    cairn("bucket", "delete", "keys-cmd")
    listed = cairn("bucket", "list")
    check(shared not in listed and "keys-cmd" not in listed and own in listed, "bucket list: " + listed)
    ok("cairn bucket delete of empty buckets; cairn bucket list agrees")
    owner.delete_object(Bucket=own, Key="x")
    owner.delete_bucket(Bucket=own)
    cairn("key", "delete", builder[0])
    ok("the owning key deleted its bucket")

    # Secrets at rest and in logs.
    for root, _, files in os.walk(DIR):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            for secret in secrets:
                check(secret.encode() not in data, "a managed key's secret is in plain text in " + path)
    ok("no managed key's secret in plain text in any file of the cluster (data, logs)")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print("keys: FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)
    print("keys: every check passed")
