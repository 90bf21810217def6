#!/usr/bin/env bash
# The s3cmd suite of Cairn's S3 front: mb, put (a small file and a 20 MiB file in 5 MiB
# parts), ls, la, get, info, cp, del and rb through s3cmd with path-style addressing.
#
# Usage (scripts/s3-clients-test starts a cluster and runs it with this environment):
#   CAIRN_S3_ENDPOINT=http://127.0.0.1:9401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#     tests/s3/s3cmd.sh
#
# Needs s3cmd 2.3 (Debian package s3cmd); uses a configuration file of its own, not ~/.s3cfg.
# Prints one "ok: ..." line per check and exits non-zero at the first failure. Its bucket
# (cairn-s3cmd-<random>) and temporary files are removed at the end.
set -euo pipefail

: "${CAIRN_S3_ENDPOINT:?set CAIRN_S3_ENDPOINT, e.g. http://127.0.0.1:9401}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
region="${AWS_DEFAULT_REGION:-us-east-1}"

case "$CAIRN_S3_ENDPOINT" in
  http://*) ;;
  *) echo "s3cmd suite: CAIRN_S3_ENDPOINT must be http://host:port" >&2; exit 2 ;;
esac
hostport="${CAIRN_S3_ENDPOINT#http://}"
hostport="${hostport%/}"

work="$(mktemp -d -t cairn-s3cmd.XXXXXX)"
bucket="cairn-s3cmd-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
bucket_made=0

S3CMD="$(command -v s3cmd)" || { echo "s3cmd suite: s3cmd is not installed" >&2; exit 2; }
s3cmd() { timeout 300 "$S3CMD" -c "$work/s3cfg" "$@"; }

cleanup() {
  if [ "$bucket_made" = 1 ]; then
    s3cmd --recursive --force del "s3://$bucket/" >/dev/null 2>&1 || true
    s3cmd rb "s3://$bucket" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# host_bucket without %(bucket)s: path-style requests to the endpoint.
cat >"$work/s3cfg" <<EOF
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = $hostport
host_bucket = $hostport
use_https = False
signature_v2 = False
bucket_location = $region
socket_timeout = 60
progress_meter = False
max_retries = 2
EOF

# shellcheck source=tests/s3/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
md5_of() { md5sum <"$1" | cut -d' ' -f1; }

echo "$("$S3CMD" --version) against $CAIRN_S3_ENDPOINT"

s3cmd mb "s3://$bucket" >/dev/null
bucket_made=1
ok "s3cmd mb s3://$bucket"
listing="$(s3cmd ls)"
check_contains "$listing" "s3://$bucket" "s3cmd ls lists the new bucket"

# --- put ----------------------------------------------------------------------------------------
head -c 1000 /dev/urandom >"$work/small.bin"
s3cmd put "$work/small.bin" "s3://$bucket/small.bin" >/dev/null
ok "s3cmd put of a small file"

head -c $((20 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
out="$(s3cmd put --progress --multipart-chunk-size-mb=5 "$work/big.bin" "s3://$bucket/dir/big.bin" |
  tr '\r' '\n')"
check_contains "$out" "[part 4 of 4, 5MB]" "s3cmd put of a 20 MiB file goes up in 4 parts of 5 MiB"

# --- ls, la ------------------------------------------------------------------------------------
listing="$(s3cmd ls "s3://$bucket/")"
check_contains "$listing" "DIR  s3://$bucket/dir/" "s3cmd ls shows the prefix as a DIR"
check_contains "$listing" "s3://$bucket/small.bin" "s3cmd ls shows the small file"
check_lacks "$listing" "big.bin" "s3cmd ls does not descend into the prefix"
size="$(awk -v k="s3://$bucket/small.bin" '$4 == k {print $3}' <<<"$listing")"
check_eq "$size" "1000" "s3cmd ls shows the small file's size"
listing="$(s3cmd ls --recursive "s3://$bucket/")"
check_contains "$listing" "s3://$bucket/dir/big.bin" "s3cmd ls --recursive shows the file under the prefix"
listing="$(s3cmd la)"
check_contains "$listing" "s3://$bucket/small.bin" "s3cmd la lists the small file"
check_contains "$listing" "DIR  s3://$bucket/dir/" "s3cmd la lists the prefix as a DIR"
listing="$(s3cmd la --recursive)"
check_contains "$listing" "s3://$bucket/dir/big.bin" "s3cmd la --recursive lists the file under the prefix"

# --- get, info -----------------------------------------------------------------------------------
s3cmd get "s3://$bucket/small.bin" "$work/small.down" >/dev/null
check_same_file "$work/small.bin" "$work/small.down" "s3cmd get of the small file gives the same bytes"
s3cmd get "s3://$bucket/dir/big.bin" "$work/big.down" >/dev/null
check_same_file "$work/big.bin" "$work/big.down" "s3cmd get of the multipart file gives the same bytes"

info="$(s3cmd info "s3://$bucket/small.bin")"
check_contains "$info" "File size: 1000" "s3cmd info shows the small file's size"
check_contains "$info" "MD5 sum:   $(md5_of "$work/small.bin")" "s3cmd info shows the small file's MD5"
check_contains "$info" "MIME type: " "s3cmd info shows a MIME type"
# s3cmd keeps the file's MD5 and attributes in its own user metadata and shows it back.
check_contains "$info" "x-amz-meta-s3cmd-attrs: " "s3cmd info shows s3cmd's user metadata"
# ls -l shows the listing's ETag as is (a plain ls --list-md5 would show s3cmd's metadata).
listing="$(s3cmd ls -l "s3://$bucket/dir/")"
etag="$(awk -v k="s3://$bucket/dir/big.bin" '$NF == k {print $4}' <<<"$listing")"
case "$etag" in
  *-4) ok "s3cmd ls -l: the 20 MiB file's ETag ends in -4 ($etag)" ;;
  *) fail "s3cmd ls -l: the 20 MiB file's ETag '$etag' does not end in -4 (listing: $listing)" ;;
esac
size="$(awk -v k="s3://$bucket/dir/big.bin" '$NF == k {print $3}' <<<"$listing")"
check_eq "$size" "$((20 * 1024 * 1024))" "s3cmd ls -l shows the 20 MiB file's size"

# --- cp, del -------------------------------------------------------------------------------------
s3cmd cp "s3://$bucket/small.bin" "s3://$bucket/copies/small.bin" >/dev/null
ok "s3cmd cp"
s3cmd get "s3://$bucket/copies/small.bin" "$work/copy.down" >/dev/null
check_same_file "$work/small.bin" "$work/copy.down" "the copy has the same bytes"
s3cmd get --force "s3://$bucket/small.bin" "$work/small.down" >/dev/null
check_same_file "$work/small.bin" "$work/small.down" "the source is intact after the copy"

s3cmd del "s3://$bucket/copies/small.bin" >/dev/null
listing="$(s3cmd ls --recursive "s3://$bucket/")"
check_lacks "$listing" "copies/small.bin" "s3cmd del removes the copy"
check_contains "$listing" "s3://$bucket/small.bin" "s3cmd del leaves the other files"
if s3cmd info "s3://$bucket/copies/small.bin" >/dev/null 2>"$work/info.err"; then
  fail "s3cmd info of a deleted file succeeded"
fi
check_contains "$(cat "$work/info.err")" "404" "s3cmd info of a deleted file is 404"

# --- rb ----------------------------------------------------------------------------------------
if s3cmd rb "s3://$bucket" >/dev/null 2>"$work/rb.err"; then
  fail "s3cmd rb of a non-empty bucket succeeded"
fi
check_contains "$(cat "$work/rb.err")" "BucketNotEmpty" "s3cmd rb of a non-empty bucket is BucketNotEmpty"
s3cmd del "s3://$bucket/small.bin" "s3://$bucket/dir/big.bin" >/dev/null
listing="$(s3cmd ls --recursive "s3://$bucket/")"
check_eq "$listing" "" "the bucket is empty after s3cmd del of both files"
s3cmd rb "s3://$bucket" >/dev/null
bucket_made=0
ok "s3cmd rb"
listing="$(s3cmd ls)"
check_lacks "$listing" "s3://$bucket" "s3cmd ls no longer lists the removed bucket"

echo "s3cmd suite: all checks passed"
