#!/usr/bin/env bash
# Container registry on Cairn's S3 front: runs Debian's docker-registry (distribution 2.8.2)
# with its `s3` storage driver pointed at a Cairn node, pushes an image built here from
# generated files with skopeo, pulls it back and checks every digest, then kills one node of
# zone-b and pulls again. One layer is 12 MiB of random bytes: the driver's writer cuts parts
# of the 5 MiB chunk size once two chunks are buffered, so that upload has several parts; the
# copy threshold is lowered to the chunk size too, so moving that blob to its final key uses
# UploadPartCopy, and the smaller blobs CopyObject.
#
# Run by scripts/s3-clients-test once the cluster is up; by hand against any S3 endpoint:
#   CAIRN_S3_ENDPOINT=http://127.0.0.1:19401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#     tests/s3/registry.sh
# Needs docker-registry, skopeo, curl and Debian's python3 with boto3 (python3-boto3).
# Environment:
#   CAIRN_S3_ENDPOINT      S3 endpoint the registry and the bucket set-up use (required)
#   CAIRN_S3_ENDPOINTS     comma-separated endpoints of n1..n6 (checks the killed node is not
#                          the one the registry talks to)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (default us-east-1)
#   CAIRN_CLUSTER_DIR      holds pids/<node>.pid; unset: the node-kill step is skipped
#   CAIRN_KILL_NODE        node killed before the second pull (default n2, zone-b)
#   REGISTRY_BUCKET        bucket for the registry (default registry-<time>-<pid>, created)
#   REGISTRY_BIN           registry binary (default /usr/bin/docker-registry)
#   PYTHON                 python with boto3 (default /usr/bin/python3)
#   STEP_TIMEOUT           seconds allowed for each push/pull/inspect (default 300)
set -euo pipefail

: "${CAIRN_S3_ENDPOINT:?CAIRN_S3_ENDPOINT must name the S3 endpoint}"
: "${AWS_ACCESS_KEY_ID:?AWS_ACCESS_KEY_ID must be set}"
: "${AWS_SECRET_ACCESS_KEY:?AWS_SECRET_ACCESS_KEY must be set}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
endpoint="${CAIRN_S3_ENDPOINT%/}"
kill_node="${CAIRN_KILL_NODE:-n2}"
bucket="${REGISTRY_BUCKET:-registry-$(date +%s)-$$}"
registry_bin="${REGISTRY_BIN:-/usr/bin/docker-registry}"
py="${PYTHON:-/usr/bin/python3}"
step_timeout="${STEP_TIMEOUT:-300}"
repo="cairn/test"
tag="1"
root_dir="/registry"
chunk_size=5242880

# Everything here talks to loopback addresses; keep any configured proxy out of the way.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-registry.XXXXXX")"
registry_log="$work/registry.log"
tool_log="$work/tools.log"
registry_pid=""
: >"$registry_log"
: >"$tool_log"

step() { printf '==> %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  set +e
  if [[ -n "$registry_pid" ]] && kill -0 "$registry_pid" 2>/dev/null; then
    kill "$registry_pid" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$registry_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$registry_pid" 2>/dev/null
    wait "$registry_pid" 2>/dev/null
  fi
  if [[ $rc -ne 0 ]]; then
    echo "---- last lines of the skopeo/tool output ----" >&2
    tail -n 25 "$tool_log" >&2
    echo "---- last lines of the registry log ----" >&2
    tail -n 30 "$registry_log" | cut -c1-600 >&2
    echo "registry test FAILED (exit $rc)" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in "$registry_bin" skopeo curl timeout "$py"; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
"$py" -c 'import boto3' 2>/dev/null || fail "$py cannot import boto3 (install python3-boto3)"

proc_alive() {
  [[ -e /proc/$1 ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# The node killed before the second pull, checked before anything starts.
node_pid=""
if [[ -n "${CAIRN_CLUSTER_DIR:-}" ]]; then
  pidfile="$CAIRN_CLUSTER_DIR/pids/$kill_node.pid"
  [[ -r "$pidfile" ]] || fail "$pidfile not readable"
  if [[ -n "${CAIRN_S3_ENDPOINTS:-}" && "$kill_node" =~ ^n([1-9])$ ]]; then
    IFS=, read -r -a endpoints <<<"$CAIRN_S3_ENDPOINTS"
    victim_endpoint="${endpoints[${BASH_REMATCH[1]} - 1]:-}"
    [[ "${victim_endpoint%/}" != "$endpoint" ]] \
      || fail "$kill_node serves $endpoint, the endpoint the registry uses; kill another node"
  fi
  node_pid="$(cat "$pidfile")"
  [[ "$node_pid" =~ ^[0-9]+$ ]] || fail "$pidfile does not hold a pid"
  proc_alive "$node_pid" || fail "$kill_node (pid $node_pid) is not running"
fi

# The S3 client used for the bucket and for looking at what the registry stored.
s3py() {
  "$py" - "$endpoint" "$bucket" "$@" <<'EOF'
import sys
import boto3
from botocore.config import Config

endpoint, bucket, command, *args = sys.argv[1:]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    config=Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    ),
)
if command == "mb":
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.head_bucket(Bucket=bucket)
elif command == "check-blobs":
    # args: key prefix, then digest=size pairs that must be stored as <prefix><aa>/<hex>/data
    prefix, expected = args[0], dict(a.split("=") for a in args[1:])
    if not expected:
        sys.exit("no blobs to look for")
    sizes = {}
    # ListObjects (v1), as the registry itself lists with it.
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"]] = obj["Size"]
    for digest, size in expected.items():
        hexd = digest.split(":", 1)[1]
        key = f"{prefix}{hexd[:2]}/{hexd}/data"
        if key not in sizes:
            sys.exit(f"{key} is not in the bucket listing")
        if sizes[key] != int(size):
            sys.exit(f"{key}: listed size {sizes[key]}, blob size {size}")
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != int(size):
            sys.exit(f"{key}: HEAD says {head['ContentLength']} bytes, blob size {size}")
    print(f"{len(expected)} blobs under s3://{bucket}/{prefix} ({len(sizes)} objects)")
else:
    sys.exit(f"unknown command {command}")
EOF
}

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

yaml_quote() {
  local s="$1"
  printf "'%s'" "${s//\'/\'\'}"
}

# --- 1. bucket -----------------------------------------------------------------------------
step "create bucket $bucket at $endpoint"
s3py mb >>"$tool_log" 2>&1 || fail "creating bucket $bucket"

# --- 2. registry ---------------------------------------------------------------------------
port="$(free_port)"
registry="127.0.0.1:$port"
# distribution 2.8 sends path-style requests whenever regionendpoint is set and has no
# forcepathstyle parameter; newer drivers need it, so it is written when the binary knows it.
path_style_line=""
if grep -aq 'forcepathstyle' "$registry_bin"; then
  path_style_line="    forcepathstyle: true"
fi
config="$work/config.yml"
(
  umask 077
  cat >"$config" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  s3:
    accesskey: $(yaml_quote "$AWS_ACCESS_KEY_ID")
    secretkey: $(yaml_quote "$AWS_SECRET_ACCESS_KEY")
    region: $AWS_DEFAULT_REGION
    regionendpoint: $endpoint
    bucket: $bucket
    secure: false
    v4auth: true
$path_style_line
    chunksize: $chunk_size
    multipartcopythresholdsize: $chunk_size
    multipartcopychunksize: $chunk_size
    multipartcopymaxconcurrency: 4
    rootdirectory: $root_dir
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $registry
  secret: $(yaml_quote "cairn-registry-test-$$-$RANDOM")
EOF
)

step "start docker-registry on $registry (bucket $bucket, root $root_dir)"
# aws-sdk-go refuses to start when AWS_CA_BUNDLE is set, as the registry brings its own HTTP
# transport; the endpoint is plain http anyway.
env -u AWS_CA_BUNDLE "$registry_bin" serve "$config" >"$registry_log" 2>&1 &
registry_pid=$!
deadline=$((SECONDS + 30))
until curl -fsS --noproxy '*' -m 2 -o /dev/null "http://$registry/v2/" 2>/dev/null; do
  kill -0 "$registry_pid" 2>/dev/null || fail "docker-registry exited at start-up"
  ((SECONDS < deadline)) || fail "docker-registry did not answer /v2/ within 30 s"
  sleep 0.2
done

# --- 3. image ------------------------------------------------------------------------------
step "build an OCI image: config + 3 gzip layers (one of 12 MiB random bytes)"
"$py" - "$work/src" "$tag" "$work/expected" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile

out, tag, expected_path = sys.argv[1:]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)

def put(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest[7:]), "wb") as f:
        f.write(data)
    return digest, len(data)

def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({os.path.dirname(n) for n in files if os.path.dirname(n)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    digest, size = put(gz)
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size}, "sha256:" + hashlib.sha256(tar_bytes).hexdigest()

nonce = os.urandom(16).hex()
layers = [
    layer({"etc/cairn/hello.txt": f"hello from cairn {nonce}\n".encode(),
           "etc/cairn/lines.txt": "".join(f"line {i} {nonce}\n" for i in range(20000)).encode()}),
    # Incompressible, so the gzip blob stays above twice the 5 MiB chunk size: its upload to
    # the bucket has more than one part.
    layer({"data/random.bin": os.urandom(12 * 1024 * 1024)}),
    layer({"data/small.bin": os.urandom(300 * 1024), "data/nonce": nonce.encode()}),
]
config = {
    "created": "2024-01-01T00:00:00Z",
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["/bin/true"], "Labels": {"cairn.test.nonce": nonce}},
    "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
    "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                for i in range(len(layers))],
}
config_digest, config_size = put(json.dumps(config, sort_keys=True).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": config_size},
    "layers": [desc for desc, _ in layers],
}
manifest_bytes = json.dumps(manifest, indent=2).encode()
manifest_digest, manifest_size = put(manifest_bytes)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
with open(expected_path, "w") as f:
    json.dump({"manifest": manifest_digest,
               "config": {"digest": config_digest, "size": config_size},
               "layers": [{"digest": d["digest"], "size": d["size"]} for d, _ in layers]}, f)
with open(expected_path + ".manifest", "w") as f:
    print(manifest_digest, file=f)
with open(expected_path + ".blobs", "w") as f:
    for d in [{"digest": config_digest, "size": config_size}] + [d for d, _ in layers]:
        print(f"{d['digest']}={d['size']}", file=f)
print(manifest_digest, " ".join(f"{d['digest'][:19]}={d['size']}" for d, _ in layers))
EOF
expected="$work/expected"
manifest_digest="$(cat "$work/expected.manifest")"
# digest=size of the config and of every layer, as the registry stores them.
mapfile -t blob_sizes <"$work/expected.blobs"
((${#blob_sizes[@]} == 4)) || fail "image build listed ${#blob_sizes[@]} blobs, expected 4"

skopeo_run() {
  echo "+ skopeo $*" >>"$tool_log"
  timeout "$step_timeout" skopeo --insecure-policy "$@" >>"$tool_log" 2>&1
}

# Checks an OCI layout pulled from the registry: every blob's sha256 and size match its
# descriptor, and the manifest, config and layer digests are the ones built above.
verify_pull() {
  "$py" - "$1" "$tag" "$expected" <<'EOF'
import hashlib, json, os, sys

layout, tag, expected_path = sys.argv[1:]
expected = json.load(open(expected_path))

def blob(digest, size):
    algo, hexd = digest.split(":", 1)
    path = os.path.join(layout, "blobs", algo, hexd)
    if not os.path.exists(path):
        sys.exit(f"blob {digest} missing from the pulled layout")
    data = open(path, "rb").read()
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        sys.exit(f"blob {digest} has sha256 {actual}")
    if len(data) != size:
        sys.exit(f"blob {digest} has {len(data)} bytes, descriptor says {size}")
    return data

index = json.load(open(os.path.join(layout, "index.json")))
refs = [m for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
if len(refs) != 1:
    sys.exit(f"pulled layout has {len(refs)} manifests tagged {tag}")
ref = refs[0]
if ref["digest"] != expected["manifest"]:
    sys.exit(f"pulled manifest {ref['digest']}, pushed {expected['manifest']}")
manifest = json.loads(blob(ref["digest"], ref["size"]))
if manifest["config"]["digest"] != expected["config"]["digest"]:
    sys.exit(f"pulled config {manifest['config']['digest']}, pushed {expected['config']['digest']}")
blob(manifest["config"]["digest"], manifest["config"]["size"])
got = [l["digest"] for l in manifest["layers"]]
want = [l["digest"] for l in expected["layers"]]
if got != want:
    sys.exit(f"pulled layers {got}, pushed {want}")
total = 0
for l in manifest["layers"]:
    total += len(blob(l["digest"], l["size"]))
print(f"manifest {ref['digest']}, config and {len(got)} layers ({total} bytes) verified")
EOF
}

# skopeo_run sends stdout to the tool log; inspect --raw needs its own.
skopeo_inspect_raw() {
  echo "+ skopeo inspect --raw $*" >>"$tool_log"
  timeout "$step_timeout" skopeo --insecure-policy inspect --raw "$@" 2>>"$tool_log"
}

# The manifest as the registry serves it must hash to the digest that was pushed.
check_registry_manifest() {
  local raw="$work/manifest.raw" got
  skopeo_inspect_raw --tls-verify=false "docker://$registry/$repo:$tag" >"$raw" \
    || fail "skopeo inspect --raw docker://$registry/$repo:$tag"
  got="sha256:$(sha256sum "$raw" | cut -d' ' -f1)"
  [[ "$got" == "$manifest_digest" ]] \
    || fail "registry serves a manifest with digest $got, pushed $manifest_digest"
  echo "registry serves manifest $got"
}

# --- 4. push -------------------------------------------------------------------------------
step "push oci:$tag to docker://$registry/$repo:$tag"
skopeo_run copy --preserve-digests --dest-tls-verify=false --digestfile "$work/pushed.digest" \
  "oci:$work/src:$tag" "docker://$registry/$repo:$tag" || fail "skopeo push"
pushed="$(cat "$work/pushed.digest")"
[[ "$pushed" == "$manifest_digest" ]] || fail "skopeo pushed $pushed, built $manifest_digest"

step "check the blobs are objects in s3://$bucket$root_dir"
s3py check-blobs "${root_dir#/}/docker/registry/v2/blobs/sha256/" "${blob_sizes[@]}" \
  2>>"$tool_log" || fail "registry blobs not found in the bucket as expected"

# --- 5. pull -------------------------------------------------------------------------------
pull_and_verify() {
  local dest="$work/$1"
  skopeo_run copy --preserve-digests --src-tls-verify=false \
    "docker://$registry/$repo:$tag" "oci:$dest:$tag" || fail "skopeo pull ($1)"
  check_registry_manifest
  verify_pull "$dest" || fail "pulled image ($1) does not match the pushed one"
}
step "pull docker://$registry/$repo:$tag and check digests"
pull_and_verify pull1

# --- 6. one node down ----------------------------------------------------------------------
if [[ -z "${CAIRN_CLUSTER_DIR:-}" ]]; then
  step "CAIRN_CLUSTER_DIR unset: no cluster to kill a node of; skipping the second pull"
else
  proc_alive "$node_pid" || fail "$kill_node (pid $node_pid) stopped before the kill"
  step "kill -9 $kill_node (pid $node_pid)"
  kill -9 "$node_pid"
  deadline=$((SECONDS + 10))
  while proc_alive "$node_pid"; do
    ((SECONDS < deadline)) || fail "$kill_node (pid $node_pid) still running 10 s after kill -9"
    sleep 0.1
  done

  step "pull again with $kill_node down and check digests"
  pull_and_verify pull2
fi

step "registry test passed"
