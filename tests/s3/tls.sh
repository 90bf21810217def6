#!/usr/bin/env bash
# TLS on both fronts and virtual-host-style S3, with real clients: node n6 of the test cluster
# is restarted with `[http.tls]`, `[s3.tls]` and `virtual_host_domain = "s3.cairn.test"`, then
#   - curl reaches the HTTP front over HTTPS: probes without the token, a blob put and read;
#   - plain HTTP to a TLS port gets no answer;
#   - boto3 (Debian's) talks to the S3 front over HTTPS, virtual-host style (bucket.s3.cairn.test,
#     resolved to 127.0.0.1 inside the script) and path style, checking the CA;
#   - the certificate files are replaced by a new pair, which the fronts serve within the reload
#     check without a restart, and boto3 works before and after;
#   - a key that does not match its certificate is refused (once two checks found it): the
#     previous pair stays served, one WARN per front is logged, and
#     cairn_front_tls_reload_failures_total counts it once.
# Certificates come from openssl. Run by scripts/s3-clients-test, which sets:
#   CAIRN_CLUSTER_DIR  the cluster's directory (n6.toml, pids/n6.pid, logs/n6.log)
#   CAIRN_BIN          the cairn binary
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
set -euo pipefail

dir="$CAIRN_CLUSTER_DIR"
tls="$dir/front-tls"
domain="s3.cairn.test"
reload_wait_s=20   # the reload check runs every 5 s (FRONT_TLS_RELOAD_CHECK_MS)
mkdir -p "$tls"

fail() { echo "tls: FAILED: $*" >&2; exit 1; }
say() { echo "tls: $*"; }

http_addr="$(sed -n '/^\[http\]/,/^\[/s/^listen = "\(.*\)"/\1/p' "$dir/n6.toml")"
s3_addr="$(sed -n '/^\[s3\]/,/^\[/s/^listen = "\(.*\)"/\1/p' "$dir/n6.toml")"
[ -n "$http_addr" ] && [ -n "$s3_addr" ] || fail "no [http] or [s3] listen in n6.toml"
s3_port="${s3_addr##*:}"

# A CA, and a front certificate signed by it (serial given) for the domain, every bucket under
# it, localhost and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=Cairn front test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
make_pair() { # name serial
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$domain" -keyout "$tls/$1.key" -out "$tls/$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:*.%s,DNS:localhost,IP:127.0.0.1\n' "$domain" "$domain" \
    >"$tls/$1.ext"
  openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -set_serial "$2" \
    -days 2 -extfile "$tls/$1.ext" -out "$tls/$1.pem" 2>/dev/null
  chmod 600 "$tls/$1.key"
}
make_pair first 4097
make_pair second 8193
make_pair stray 12289
cp "$tls/first.pem" "$tls/front.pem"
install -m 600 "$tls/first.key" "$tls/front.key"

served_serial() { # host:port
  echo | timeout 10 openssl s_client -connect "$1" -servername "$domain" 2>/dev/null \
    | openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}

say "restarting n6 with TLS on both fronts and virtual hosts under $domain"
pid="$(cat "$dir/pids/n6.pid")"
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
kill -0 "$pid" 2>/dev/null && fail "n6 did not stop"
sed -i "/^\[s3\]/a virtual_host_domain = \"$domain\"" "$dir/n6.toml"
cat >>"$dir/n6.toml" <<EOF

[http.tls]
cert = "front-tls/front.pem"
key = "front-tls/front.key"

[s3.tls]
cert = "front-tls/front.pem"
key = "front-tls/front.key"
EOF
"$CAIRN_BIN" config check "$dir/n6.toml" >/dev/null \
  || fail "cairn config check refuses the TLS configuration"
"$CAIRN_BIN" node --config "$dir/n6.toml" >>"$dir/logs/n6.log" 2>&1 &
echo $! >"$dir/pids/n6.pid"
disown

curl_tls=(curl -sS --max-time 10 --cacert "$tls/ca.pem")
for _ in $(seq 1 120); do
  code="$("${curl_tls[@]}" -o /dev/null -w '%{http_code}' "https://localhost:${http_addr##*:}/readyz" \
    2>/dev/null || true)"
  [ "$code" = 200 ] && break
  sleep 0.5
done
[ "$code" = 200 ] || fail "https://localhost:${http_addr##*:}/readyz answers $code, not 200"
say "the HTTP front answers /readyz over HTTPS"

# The HTTP front over HTTPS: a blob in and out, checked by its hash.
head -c 100000 /dev/urandom >"$tls/blob"
answer="$("${curl_tls[@]}" -T "$tls/blob" "https://localhost:${http_addr##*:}/v1/blobs")"
hash="$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')"
"${curl_tls[@]}" -o "$tls/blob.back" "https://localhost:${http_addr##*:}/v1/blobs/$hash"
cmp -s "$tls/blob" "$tls/blob.back" || fail "the blob read back over HTTPS differs"
say "a blob put and read back over HTTPS ($hash)"

# Plain HTTP to a TLS port: no HTTP answer.
if code="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$http_addr/healthz" 2>/dev/null)" \
  && [ "$code" = 200 ]; then
  fail "plain HTTP to the TLS port was answered 200"
fi
say "plain HTTP to the TLS port gets no answer"

[ "$(served_serial "$s3_addr")" = 1001 ] || fail "the S3 front serves serial $(served_serial "$s3_addr"), not 1001"

s3_round() { # label
  python3 - "$1" "$tls/ca.pem" "$s3_port" "$domain" <<'PY'
import socket, sys
import boto3
from botocore.config import Config

label, ca, port, domain = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
real = socket.getaddrinfo
def resolve(host, *args, **kwargs):
    # Every name under the domain is this node, as a wildcard DNS record would say.
    if isinstance(host, str) and (host == domain or host.endswith("." + domain)):
        host = "127.0.0.1"
    return real(host, *args, **kwargs)
socket.getaddrinfo = resolve

def client(endpoint, style):
    return boto3.client("s3", endpoint_url=endpoint, verify=ca,
                        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}))

virtual = client(f"https://{domain}:{port}", "virtual")
path = client(f"https://127.0.0.1:{port}", "path")
bucket = f"tls-{label}"
seen = []
virtual.meta.events.register("before-send", lambda request, **_: seen.append(request.url))
virtual.create_bucket(Bucket=bucket)
body = bytes(range(256)) * 1000
virtual.put_object(Bucket=bucket, Key="dir/one", Body=body)
assert virtual.get_object(Bucket=bucket, Key="dir/one")["Body"].read() == body
assert path.get_object(Bucket=bucket, Key="dir/one")["Body"].read() == body
path.put_object(Bucket=bucket, Key="dir/two", Body=b"two")
keys = [o["Key"] for o in virtual.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]]
assert keys == ["dir/one", "dir/two"], keys
virtual.delete_object(Bucket=bucket, Key="dir/one")
path.delete_object(Bucket=bucket, Key="dir/two")
virtual.delete_bucket(Bucket=bucket)
hosts = {u.split("/")[2] for u in seen}
assert hosts == {f"{bucket}.{domain}:{port}"}, hosts
print(f"tls: boto3 {label}: virtual-host and path-style requests over HTTPS passed ({len(seen)} virtual-host requests to {hosts.pop()})")
PY
}
s3_round first

say "replacing the certificate files with a new pair"
cp "$tls/second.pem" "$tls/front.pem.new" && mv "$tls/front.pem.new" "$tls/front.pem"
install -m 600 "$tls/second.key" "$tls/front.key.new" && mv "$tls/front.key.new" "$tls/front.key"
for _ in $(seq 1 $((reload_wait_s * 2))); do
  [ "$(served_serial "$s3_addr")" = 2001 ] && [ "$(served_serial "$http_addr")" = 2001 ] && break
  sleep 0.5
done
[ "$(served_serial "$s3_addr")" = 2001 ] || fail "the S3 front still serves $(served_serial "$s3_addr") after $reload_wait_s s"
[ "$(served_serial "$http_addr")" = 2001 ] || fail "the HTTP front still serves $(served_serial "$http_addr") after $reload_wait_s s"
say "both fronts serve the new certificate without a restart"
s3_round second

say "a key that does not match the certificate"
install -m 600 "$tls/stray.key" "$tls/front.key.new" && mv "$tls/front.key.new" "$tls/front.key"
metric() {
  "${curl_tls[@]}" "https://localhost:${http_addr##*:}/metrics" \
    | sed -n "s/^cairn_front_tls_reload_failures_total{front=\"$1\"} //p"
}
for _ in $(seq 1 $((reload_wait_s * 2))); do
  [ "$(metric s3)" = 1 ] && [ "$(metric http)" = 1 ] && break
  sleep 0.5
done
[ "$(metric s3)" = 1 ] && [ "$(metric http)" = 1 ] \
  || fail "cairn_front_tls_reload_failures_total is s3=$(metric s3) http=$(metric http), not 1 each"
sleep 12 # two more checks: the same failure is neither counted nor logged again
[ "$(metric s3)" = 1 ] && [ "$(metric http)" = 1 ] \
  || fail "the same failure was counted again: s3=$(metric s3) http=$(metric http)"
warnings="$(grep -c 'TLS certificate not reloaded' "$dir/logs/n6.log" || true)"
[ "$warnings" = 2 ] || fail "$warnings WARN lines for the mismatched key, not one per front"
[ "$(served_serial "$s3_addr")" = 2001 ] || fail "the S3 front no longer serves the last good pair"
s3_round third
say "the mismatched key was refused once per front, and the last good pair is still served"
