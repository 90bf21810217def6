#!/usr/bin/env bash
# The rclone suite of Cairn's S3 front: a tree of files (small ones, and large ones uploaded in
# parts) synced up with checksums, checked against the bucket by hash, changed and synced
# again (new, changed and deleted files), then synced down into an empty directory and
# compared byte for byte.
#
# Usage (scripts/s3-clients-test starts a cluster and runs it with this environment):
#   CAIRN_S3_ENDPOINT=http://127.0.0.1:9401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#     tests/s3/rclone.sh
#
# Prints one "ok: ..." line per check and exits non-zero at the first failure. Its bucket and
# temporary files are removed at the end.
set -euo pipefail

: "${CAIRN_S3_ENDPOINT:?set CAIRN_S3_ENDPOINT, e.g. http://127.0.0.1:9401}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"

# rclone refuses AWS_CA_BUNDLE (with its own HTTP transport), and the endpoint is plain HTTP.
unset AWS_CA_BUNDLE
# The remote, configured by environment only (no rclone.conf is read or written).
export RCLONE_CONFIG=/dev/null
export RCLONE_CONFIG_CAIRN_TYPE=s3
export RCLONE_CONFIG_CAIRN_PROVIDER=Other
export RCLONE_CONFIG_CAIRN_ENDPOINT="$CAIRN_S3_ENDPOINT"
export RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
export RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_CAIRN_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE=true
# Parts of 5 MiB from 8 MiB on, so that the large files go up as multipart uploads.
export RCLONE_CONFIG_CAIRN_UPLOAD_CUTOFF=8M
export RCLONE_CONFIG_CAIRN_CHUNK_SIZE=5M

work="$(mktemp -d -t cairn-rclone.XXXXXX)"
bucket="cairn-rclone-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
remote="cairn:$bucket"
cleanup() {
  rclone purge "$remote" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
rc() { rclone --retries 1 --low-level-retries 2 --contimeout 10s --timeout 60s "$@"; }

echo "$(rclone version | head -1) against $CAIRN_S3_ENDPOINT"
src="$work/src"
mkdir -p "$src/a/b" "$src/c" "$src/empty-dir"
for i in $(seq 1 20); do head -c $((i * 1000)) /dev/urandom >"$src/a/small-$i.bin"; done
head -c 20971520 /dev/urandom >"$src/a/b/large.bin"   # 20 MiB: four 5 MiB parts
head -c 9437184 /dev/urandom >"$src/c/medium.bin"     # 9 MiB: two parts
: >"$src/c/empty.txt"
echo "a file with spaces" >"$src/c/with spaces & more.txt"

rc mkdir "$remote"
rc sync --checksum "$src" "$remote"
ok "rclone sync up with --checksum"
rc check "$src" "$remote" || fail "rclone check after the first sync"
ok "rclone check: every file's size and hash match (MD5 of small files, of large ones too)"
rc check --download "$src" "$remote" || fail "rclone check --download after the first sync"
ok "rclone check --download: every file's bytes match"

# Changes: one new file, one changed, one deleted.
head -c 5000 /dev/urandom >"$src/a/new.bin"
head -c 7000 /dev/urandom >"$src/a/small-3.bin"
rm "$src/a/small-4.bin"
rc sync --checksum "$src" "$remote"
listed="$(rc lsf -R --files-only "$remote" | sort)"
expected="$(cd "$src" && find . -type f | sed 's|^\./||' | sort)"
[ "$listed" = "$expected" ] || fail "the bucket lists other files than the source after the second sync"$'\n'"$listed"
ok "a second sync adds the new file and removes the deleted one"
rc check "$src" "$remote" || fail "rclone check after the second sync"
ok "rclone check after the second sync"

dst="$work/dst"
mkdir "$dst"
rc sync --checksum "$remote" "$dst"
# Files only: rclone makes no empty directories.
(cd "$src" && find . -type f | while read -r f; do cmp -s "$f" "$dst/$f" || exit 1; done) \
  || fail "a file synced down differs from its source"
ok "rclone sync down gives every file back byte for byte"
echo "rclone suite: all checks passed"
