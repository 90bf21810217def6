"""One large PutObject through a node's S3 front, then read back byte for byte with GetObject.

Run by scripts/large-object-bench against a local cluster. While the object goes in, the node's
resident memory (VmRSS, RssAnon, RssFile of /proc/PID/status) is sampled every 100 ms, its
open files are looked at for a spool file, and the bytes it wrote to disk are counted
(write_bytes of /proc/PID/io): its share of the chunks' replicas is about half the object in a
six-node cluster at factor 3, and a body spooled first would add the whole object again. The
figures go to the JSON file named by CAIRN_LARGE_OBJECT_OUT. Exits non-zero if the object does
not read back exactly, if the node held a spool file open or wrote more than the object's size
to disk, or if its resident memory grew by more than CAIRN_LARGE_OBJECT_RSS_GROWTH_MIB_MAX.

Environment: CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
(from the cluster's s3.env), CAIRN_NODE_PID (the node behind the endpoint),
CAIRN_LARGE_OBJECT_MIB, CAIRN_LARGE_OBJECT_OUT, CAIRN_LARGE_OBJECT_RSS_GROWTH_MIB_MAX.
"""

import io
import json
import os
import sys
import threading
import time

import boto3
from botocore.config import Config

MIB = 1024 * 1024
BLOCK_BYTES = MIB


def block(index, base):
    """Block `index` of the object: a random MiB with the index written over its start, so
    that no two blocks (and no two chunks) are alike."""
    return index.to_bytes(8, "little") + base[8:]


class Body(io.RawIOBase):
    """The object's bytes, made as they are read (nothing this size is held or written)."""

    def __init__(self, size, base):
        self.size, self.base, self.pos = size, base, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, min(self.size, start + offset))
        return self.pos

    def __len__(self):
        return self.size - self.pos

    def readinto(self, buf):
        if self.pos >= self.size:
            return 0
        index, within = divmod(self.pos, BLOCK_BYTES)
        data = block(index, self.base)[within:]
        n = min(len(buf), len(data), self.size - self.pos)
        buf[:n] = data[:n]
        self.pos += n
        return n


def status_kib(pid):
    figures = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                figures[name] = int(rest.split()[0])
    return figures


def written_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def spool_files(pid):
    """Open files of the node that are neither its store's nor its metadata's."""
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if "spool" in target or target.startswith("/tmp/.tmp"):
                found.add(target)
    except OSError:
        pass
    return found


def main():
    size = int(os.environ.get("CAIRN_LARGE_OBJECT_MIB", "10240")) * MIB
    pid = int(os.environ["CAIRN_NODE_PID"])
    out = os.environ["CAIRN_LARGE_OBJECT_OUT"]
    growth_max_mib = int(os.environ.get("CAIRN_LARGE_OBJECT_RSS_GROWTH_MIB_MAX", "64"))
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["CAIRN_S3_ENDPOINT"],
        config=Config(
            retries={"max_attempts": 1},
            read_timeout=600,
            s3={"addressing_style": "path", "payload_signing_enabled": False},
        ),
    )
    bucket = "large-object"
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    base = os.urandom(BLOCK_BYTES)

    before = status_kib(pid)
    written_before = written_bytes(pid)
    samples, spooled, done = [], set(), threading.Event()

    def sample():
        while not done.is_set():
            samples.append(status_kib(pid))
            spooled.update(spool_files(pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        s3.put_object(Bucket=bucket, Key="object", Body=Body(size, base), ContentLength=size)
    finally:
        done.set()
        sampler.join()
    put_s = time.monotonic() - started
    after_put = status_kib(pid)
    written = written_bytes(pid) - written_before

    started = time.monotonic()
    got = s3.get_object(Bucket=bucket, Key="object")
    if got["ContentLength"] != size:
        sys.exit(f"GetObject said {got['ContentLength']} bytes, not {size}")
    stream, pos, mismatch = got["Body"], 0, None
    while True:
        data = stream.read(BLOCK_BYTES)
        if not data:
            break
        index, within = divmod(pos, BLOCK_BYTES)
        expected = block(index, base)[within : within + len(data)]
        # A read may end within a block; the rest of it is compared with the next read.
        if data != expected[: len(data)] or len(expected) < len(data):
            mismatch = pos
            break
        pos += len(data)
    get_s = time.monotonic() - started
    if mismatch is None and pos != size:
        mismatch = pos

    peak = {k: max(s[k] for s in samples) for k in ("VmRSS", "RssAnon", "RssFile")}
    growth = {k: (peak[k] - before[k]) / 1024 for k in peak}
    result = {
        "object_bytes": size,
        "put_s": round(put_s, 2),
        "put_mb_per_s": round(size / put_s / 1e6, 1),
        "get_s": round(get_s, 2),
        "get_mb_per_s": round(size / get_s / 1e6, 1),
        "read_back_identical": mismatch is None,
        "node_rss_mib_before": round(before["VmRSS"] / 1024, 1),
        "node_rss_mib_peak": round(peak["VmRSS"] / 1024, 1),
        "node_rss_mib_after_put": round(after_put["VmRSS"] / 1024, 1),
        "node_rss_growth_mib": round(growth["VmRSS"], 1),
        "node_rss_anon_growth_mib": round(growth["RssAnon"], 1),
        "node_rss_file_growth_mib": round(growth["RssFile"], 1),
        "node_rss_growth_mib_max": growth_max_mib,
        "node_disk_written_over_object": round(written / size, 3),
        "spool_files_seen": sorted(spooled),
        "samples": len(samples),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    failures = []
    if mismatch is not None:
        failures.append(f"the object read back differs from byte {mismatch} on")
    if spooled:
        failures.append(f"the node held spool files open: {sorted(spooled)}")
    if written > size:
        failures.append(
            f"the node wrote {written / size:.2f} times the object's size to disk "
            "(its replicas' share is about half: was the body spooled?)"
        )
    if growth["VmRSS"] > growth_max_mib:
        failures.append(
            f"the node's resident memory grew by {growth['VmRSS']:.0f} MiB "
            f"(at most {growth_max_mib})"
        )
    if failures:
        sys.exit("large object: " + "; ".join(failures))
    s3.delete_object(Bucket=bucket, Key="object")


if __name__ == "__main__":
    main()
