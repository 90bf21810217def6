#!/usr/bin/env bash
# What a node's /metrics says after the S3 suites ran through it, read by promtool: the
# exposition passes `promtool check metrics`, S3 requests are counted by operation and status
# with latency histograms, and the build and process families are there.
# Run by scripts/s3-clients-test, which sets CAIRN_CLUSTER_DIR (n1.toml).
set -euo pipefail

fail() { echo "metrics: FAILED: $*" >&2; exit 1; }

http_addr="$(sed -n '/^\[http\]/,/^\[/s/^listen = "\(.*\)"/\1/p' "$CAIRN_CLUSTER_DIR/n1.toml")"
[ -n "$http_addr" ] || fail "no [http] listen in n1.toml"
text="$(curl -sS --max-time 10 "http://$http_addr/metrics")"

# promtool's lint: format, names, units, HELP and TYPE lines.
printf '%s\n' "$text" | promtool check metrics || fail "promtool check metrics refuses the exposition"

value() { # a sample's name and labels, exactly as exposed
  printf '%s\n' "$text" | awk -v series="$1" '$1 == series { print $2 }'
}
puts="$(value 'cairn_s3_requests_total{operation="PutObject",status="200"}')"
[ -n "$puts" ] && [ "$puts" -gt 0 ] || fail "no PutObject 200 counted: '$puts'"
buckets="$(value 'cairn_s3_request_duration_seconds_count{operation="PutObject",status="200"}')"
[ "$buckets" = "$puts" ] || fail "the PutObject histogram counts $buckets, the counter $puts"
refused="$(printf '%s\n' "$text" | grep -c '^cairn_s3_requests_total{operation="[A-Za-z]*",status="4[0-9][0-9]"}' || true)"
[ "$refused" -gt 0 ] || fail "no refused request counted (the suites read missing keys)"
for family in cairn_build_info process_resident_memory_bytes process_cpu_seconds_total \
  process_open_fds process_max_fds process_start_time_seconds process_virtual_memory_bytes; do
  grep -q "^$family" <<<"$text" || fail "no $family"
done
grep -q '^cairn_build_info{version="[^"]*",protocol="cairn/[0-9]*"} 1$' <<<"$text" \
  || fail "cairn_build_info does not name the version and protocol"
operations="$(printf '%s\n' "$text" | sed -n 's/^cairn_s3_requests_total{operation="\([^"]*\)".*/\1/p' | sort -u | wc -l)"
rss="$(value process_resident_memory_bytes)"
echo "metrics: promtool accepts n1's exposition; $puts PutObject 200, $operations S3 operations counted, resident memory $((rss / 1048576)) MiB"
