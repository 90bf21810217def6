# The checks the shell suites of the S3 front share (sourced by awscli.sh and s3cmd.sh):
# each prints "ok: WHAT" or "FAIL: WHAT (...)" and stops the suite on a failure.

ok() { printf 'ok: %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
# check_eq ACTUAL EXPECTED WHAT
check_eq() {
  if [ "$1" != "$2" ]; then
    fail "$3 (expected '$2', got '$1')"
  fi
  ok "$3"
}
# check_contains TEXT NEEDLE WHAT: TEXT has a line containing NEEDLE (a fixed string).
check_contains() {
  if ! grep -qF -- "$2" <<<"$1"; then
    fail "$3 (no '$2' in: $1)"
  fi
  ok "$3"
}
# check_lacks TEXT NEEDLE WHAT: no line of TEXT contains NEEDLE.
check_lacks() {
  if grep -qF -- "$2" <<<"$1"; then
    fail "$3 ('$2' is in: $1)"
  fi
  ok "$3"
}
# check_same_file A B WHAT: byte for byte.
check_same_file() {
  if ! cmp "$1" "$2"; then
    fail "$3 ($1 and $2 differ)"
  fi
  ok "$3"
}
