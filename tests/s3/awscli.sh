#!/usr/bin/env bash
# The AWS CLI suite of Cairn's S3 front: `aws s3` (mb, cp up and down, a 200 MiB multipart
# upload, sync both ways, ls, rm, rb) and `aws s3api` (put/get/head/list/delete objects).
#
# Usage (scripts/s3-clients-test starts a cluster and runs it with this environment):
#   CAIRN_S3_ENDPOINT=http://127.0.0.1:9401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#     tests/s3/awscli.sh
#
# Uses Debian's AWS CLI v2 (/usr/bin/aws, package awscli) unless AWS_CLI names another.
# Prints one "ok: ..." line per check and exits non-zero at the first failure. Its bucket
# (cairn-awscli-<random>) and temporary files are removed at the end.
set -euo pipefail

: "${CAIRN_S3_ENDPOINT:?set CAIRN_S3_ENDPOINT, e.g. http://127.0.0.1:9401}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true
export AWS_PAGER=""

if [ -z "${AWS_CLI:-}" ]; then
  if [ -x /usr/bin/aws ]; then AWS_CLI=/usr/bin/aws; else AWS_CLI=aws; fi
fi

work="$(mktemp -d -t cairn-awscli.XXXXXX)"
bucket="cairn-awscli-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
bucket_made=0

cleanup() {
  if [ "$bucket_made" = 1 ]; then
    timeout 300 "$AWS_CLI" --endpoint-url "$CAIRN_S3_ENDPOINT" s3 rb --force "s3://$bucket" \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A configuration of its own: path-style addressing, and 16 MiB parts for anything over
# 16 MiB, so the 200 MiB file goes up in 13 parts.
export AWS_CONFIG_FILE="$work/config"
export AWS_SHARED_CREDENTIALS_FILE="$work/credentials"
cat >"$AWS_CONFIG_FILE" <<EOF
[default]
region = $AWS_DEFAULT_REGION
s3 =
  addressing_style = path
  multipart_threshold = 16MB
  multipart_chunksize = 16MB
EOF
: >"$AWS_SHARED_CREDENTIALS_FILE"

aws() { "$AWS_CLI" --endpoint-url "$CAIRN_S3_ENDPOINT" "$@"; }
# shellcheck source=tests/s3/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

echo "$("$AWS_CLI" --version) against $CAIRN_S3_ENDPOINT"

# --- buckets ---------------------------------------------------------------------------------
aws s3 mb "s3://$bucket" >/dev/null
bucket_made=1
ok "aws s3 mb s3://$bucket"
listing="$(aws s3 ls)"
check_contains "$listing" "$bucket" "aws s3 ls lists the new bucket"

# --- cp up and down --------------------------------------------------------------------------
head -c 1000 /dev/urandom >"$work/small.bin"
aws s3 cp "$work/small.bin" "s3://$bucket/files/small.bin" >/dev/null
ok "aws s3 cp of a small file up"
aws s3 cp "s3://$bucket/files/small.bin" "$work/small.down" >/dev/null
check_same_file "$work/small.bin" "$work/small.down" "aws s3 cp of a small file down gives the same bytes"
etag="$(aws s3api head-object --bucket "$bucket" --key files/small.bin --query ETag --output text)"
check_eq "$etag" "\"$(md5sum <"$work/small.bin" | cut -d' ' -f1)\"" "the small file's ETag is its MD5"

echo "writing a 200 MiB random file"
head -c $((200 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
aws s3 cp --only-show-errors "$work/big.bin" "s3://$bucket/files/big.bin"
ok "aws s3 cp of a 200 MiB file up"
etag="$(aws s3api head-object --bucket "$bucket" --key files/big.bin --query ETag --output text)"
case "$etag" in
  *-13\") ok "the 200 MiB file went up in 13 parts of 16 MiB (ETag $etag)" ;;
  *) fail "the 200 MiB file's ETag $etag does not end in -13: not a 13-part multipart upload" ;;
esac
# The multipart ETag: MD5 of the concatenated binary MD5s of the 16 MiB parts, then -13.
expected_etag="$(
  cd "$work"
  split -b 16M -d -a 3 big.bin part.
  for p in part.*; do md5sum <"$p" | cut -d' ' -f1 | xxd -r -p; done | md5sum | cut -d' ' -f1
  rm -f part.*
)"
check_eq "$etag" "\"$expected_etag-13\"" "the 200 MiB file's ETag is the MD5 of its part MD5s"
length="$(aws s3api head-object --bucket "$bucket" --key files/big.bin --query ContentLength --output text)"
check_eq "$length" "$((200 * 1024 * 1024))" "head-object ContentLength of the 200 MiB file"
aws s3 cp --only-show-errors "s3://$bucket/files/big.bin" "$work/big.down"
check_same_file "$work/big.bin" "$work/big.down" "aws s3 cp of the 200 MiB file down gives the same bytes"
rm -f "$work/big.bin" "$work/big.down"

# --- sync both ways --------------------------------------------------------------------------
src="$work/tree"
mkdir -p "$src/sub/deep" "$src/other"
echo "alpha" >"$src/a.txt"
echo "beta" >"$src/sub/b.txt"
head -c 70000 /dev/urandom >"$src/sub/deep/c.bin"
head -c 3000 /dev/urandom >"$src/other/d.bin"
: >"$src/empty.txt"
aws s3 sync --only-show-errors "$src" "s3://$bucket/tree/"
ok "aws s3 sync of a directory tree up"
aws s3 sync --only-show-errors "s3://$bucket/tree/" "$work/tree.down"
if ! diff -r "$src" "$work/tree.down"; then fail "the tree synced down differs from the one synced up"; fi
ok "aws s3 sync down gives the same tree (diff -r)"

echo "gamma" >"$src/sub/new.txt"
echo "alpha, changed and longer" >"$src/a.txt"
rm "$src/other/d.bin"
aws s3 sync --only-show-errors --delete "$src" "s3://$bucket/tree/"
ok "aws s3 sync --delete of the changed tree up"
aws s3 sync --only-show-errors --delete "s3://$bucket/tree/" "$work/tree.down"
rmdir "$work/tree.down/other" 2>/dev/null || true
rmdir "$src/other"
if ! diff -r "$src" "$work/tree.down"; then fail "the changed tree synced down differs"; fi
ok "aws s3 sync --delete down follows the changes (new, changed and removed files)"

# --- ls ----------------------------------------------------------------------------------------
listing="$(aws s3 ls "s3://$bucket/tree/")"
check_contains "$listing" "PRE sub/" "aws s3 ls of a prefix shows its subdirectory"
check_contains "$listing" "a.txt" "aws s3 ls of a prefix shows its files"
check_lacks "$listing" "b.txt" "aws s3 ls of a prefix does not descend"
listing="$(aws s3 ls --recursive "s3://$bucket/")"
all_keys="files/big.bin files/small.bin tree/a.txt tree/empty.txt"
all_keys="$all_keys tree/sub/b.txt tree/sub/deep/c.bin tree/sub/new.txt"
keys="$(awk '{print $4}' <<<"$listing" | sort | tr '\n' ' ')"
check_eq "$keys" "$all_keys " "aws s3 ls --recursive lists every key"
size="$(awk '$4 == "tree/sub/deep/c.bin" {print $3}' <<<"$listing")"
check_eq "$size" "70000" "aws s3 ls --recursive shows sizes"

# --- s3api -------------------------------------------------------------------------------------
echo "hello from s3api" >"$work/api.txt"
put_etag="$(aws s3api put-object --bucket "$bucket" --key api/hello.txt --body "$work/api.txt" \
  --content-type text/plain --metadata k=v --query ETag --output text)"
check_eq "$put_etag" "\"$(md5sum <"$work/api.txt" | cut -d' ' -f1)\"" "s3api put-object returns the MD5 ETag"
aws s3api get-object --bucket "$bucket" --key api/hello.txt "$work/api.down" >/dev/null
check_same_file "$work/api.txt" "$work/api.down" "s3api get-object gives the same bytes"
head="$(aws s3api head-object --bucket "$bucket" --key api/hello.txt \
  --query '[ContentLength, ContentType, Metadata.k, ETag]' --output text)"
check_eq "$head" "$(stat -c %s "$work/api.txt")	text/plain	v	$put_etag" \
  "s3api head-object: length, content type, metadata, ETag"
aws s3api get-object --bucket "$bucket" --key api/hello.txt --range bytes=6-9 "$work/api.range" >/dev/null
check_eq "$(cat "$work/api.range")" "from" "s3api get-object --range"
keys="$(aws s3api list-objects-v2 --bucket "$bucket" --prefix tree/sub/ \
  --query 'Contents[].Key' --output text)"
check_eq "$keys" "tree/sub/b.txt	tree/sub/deep/c.bin	tree/sub/new.txt" "s3api list-objects-v2 --prefix"
prefixes="$(aws s3api list-objects-v2 --bucket "$bucket" --delimiter / \
  --query 'CommonPrefixes[].Prefix' --output text)"
check_eq "$prefixes" "api/	files/	tree/" "s3api list-objects-v2 --delimiter /"
# Small pages: the CLI follows the continuation tokens itself.
keys="$(aws s3api list-objects-v2 --bucket "$bucket" --page-size 2 \
  --query 'Contents[].Key' --output text | tr '\t' '\n' | tr -s '\n' | tr '\n' ' ')"
check_eq "$keys" "api/hello.txt $all_keys " "s3api list-objects-v2 in pages of 2"
aws s3api delete-object --bucket "$bucket" --key api/hello.txt
ok "s3api delete-object"
if aws s3api head-object --bucket "$bucket" --key api/hello.txt >/dev/null 2>"$work/head.err"; then
  fail "head-object of a deleted key succeeded"
fi
check_contains "$(cat "$work/head.err")" "404" "head-object of a deleted key is 404"

# --- rm, rb ------------------------------------------------------------------------------------
aws s3 rm --only-show-errors --recursive "s3://$bucket/tree/"
listing="$(aws s3 ls --recursive "s3://$bucket/")"
check_lacks "$listing" "tree/" "aws s3 rm --recursive of a prefix removes its keys"
check_contains "$listing" "files/small.bin" "aws s3 rm --recursive of a prefix leaves the other keys"
if aws s3 rb "s3://$bucket" >/dev/null 2>"$work/rb.err"; then
  fail "aws s3 rb of a non-empty bucket succeeded"
fi
check_contains "$(cat "$work/rb.err")" "BucketNotEmpty" "aws s3 rb of a non-empty bucket is BucketNotEmpty"
aws s3 rm --only-show-errors --recursive "s3://$bucket/"
listing="$(aws s3 ls --recursive "s3://$bucket/")"
check_eq "$listing" "" "aws s3 rm --recursive empties the bucket"
aws s3 rb "s3://$bucket" >/dev/null
bucket_made=0
ok "aws s3 rb"
listing="$(aws s3 ls)"
check_lacks "$listing" "$bucket" "aws s3 ls no longer lists the removed bucket"

echo "awscli suite: all checks passed"
