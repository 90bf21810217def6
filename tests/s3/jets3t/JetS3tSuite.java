// The JetS3t suite of Cairn's S3 front (JetS3t is the Java library older Artifactory S3
// providers are built on; it signs with AWS signature version 2): a bucket made, objects put
// with metadata and read back, a multipart upload, a server-side copy, listings with a prefix
// and a delimiter, deletes.
//
// Usage (scripts/s3-clients-test compiles it against Debian's libjets3t-java and runs it):
//   CAIRN_S3_ENDPOINT=http://127.0.0.1:9401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//     java -cp <jars>:<classes> JetS3tSuite
//
// Prints one "ok: ..." line per check and exits 1 at the first failure. Its bucket is removed
// at the end.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.net.URI;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.jets3t.service.Jets3tProperties;
import org.jets3t.service.impl.rest.httpclient.RestS3Service;
import org.jets3t.service.model.MultipartCompleted;
import org.jets3t.service.model.MultipartPart;
import org.jets3t.service.model.MultipartUpload;
import org.jets3t.service.model.S3Object;
import org.jets3t.service.model.StorageObject;
import org.jets3t.service.security.AWSCredentials;

public final class JetS3tSuite {
    private static final int MIB = 1024 * 1024;

    static void ok(String what) {
        System.out.println("ok: " + what);
    }

    static void check(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
        ok(what);
    }

    static byte[] random(int n) {
        byte[] b = new byte[n];
        new SecureRandom().nextBytes(b);
        return b;
    }

    static byte[] read(InputStream in) throws Exception {
        try (InputStream s = in) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[65536];
            int n;
            while ((n = s.read(buf)) > 0) {
                out.write(buf, 0, n);
            }
            return out.toByteArray();
        }
    }

    static String md5Hex(byte[] data) throws Exception {
        StringBuilder sb = new StringBuilder();
        for (byte b : MessageDigest.getInstance("MD5").digest(data)) {
            sb.append(String.format("%02x", b));
        }
        return sb.toString();
    }

    static S3Object object(String key, byte[] data) {
        S3Object o = new S3Object(key);
        o.setDataInputStream(new ByteArrayInputStream(data));
        o.setContentLength(data.length);
        return o;
    }

    public static void main(String[] args) throws Exception {
        String endpoint = System.getenv("CAIRN_S3_ENDPOINT");
        String key = System.getenv("AWS_ACCESS_KEY_ID");
        String secret = System.getenv("AWS_SECRET_ACCESS_KEY");
        if (endpoint == null || key == null || secret == null) {
            System.err.println("set CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
            System.exit(2);
        }
        URI uri = URI.create(endpoint);
        Jets3tProperties props = new Jets3tProperties();
        props.setProperty("s3service.s3-endpoint", uri.getHost());
        props.setProperty("s3service.s3-endpoint-http-port", String.valueOf(uri.getPort()));
        props.setProperty("s3service.https-only", "false");
        props.setProperty("s3service.disable-dns-buckets", "true");
        props.setProperty("httpclient.retry-max", "0");
        RestS3Service s3 = new RestS3Service(new AWSCredentials(key, secret), "cairn-jets3t-suite", null, props);
        System.out.println("JetS3t (signature version 2) against " + endpoint);
        String bucket = "cairn-jets3t-" + Long.toHexString(new SecureRandom().nextLong() & 0xffffffffffL);
        int status = 0;
        try {
            s3.createBucket(bucket);
            ok("createBucket " + bucket);

            byte[] small = random(10_000);
            S3Object put = object("dir/small.bin", small);
            put.setContentType("application/x-test");
            put.addMetadata("x-amz-meta-build", "42");
            s3.putObject(bucket, put);
            S3Object got = s3.getObject(bucket, "dir/small.bin");
            check(Arrays.equals(read(got.getDataInputStream()), small), "putObject then getObject gives the bytes back");
            StorageObject details = s3.getObjectDetails(bucket, "dir/small.bin");
            check(details.getContentLength() == small.length, "getObjectDetails gives the length");
            check("application/x-test".equals(details.getContentType()), "getObjectDetails gives the content type");
            check("42".equals(String.valueOf(details.getMetadata("build"))), "getObjectDetails gives the user metadata");
            check(md5Hex(small).equals(details.getETag()), "the ETag is the MD5 of the bytes");

            // A multipart upload of two 5 MiB parts and a short one.
            byte[][] parts = {random(5 * MIB), random(5 * MIB), random(12_345)};
            MultipartUpload upload = s3.multipartStartUpload(bucket, "dir/big.bin", null);
            List<MultipartPart> done = new ArrayList<>();
            for (int i = 0; i < parts.length; i++) {
                done.add(s3.multipartUploadPart(upload, i + 1, object("dir/big.bin", parts[i])));
            }
            check(s3.multipartListParts(upload).size() == 3, "multipartListParts lists the three parts");
            MultipartCompleted completed = s3.multipartCompleteUpload(upload, done);
            check(completed.getEtag() != null && completed.getEtag().replace("\"", "").endsWith("-3"), "multipartCompleteUpload gives a -3 ETag");
            ByteArrayOutputStream whole = new ByteArrayOutputStream();
            for (byte[] p : parts) {
                whole.write(p);
            }
            byte[] big = read(s3.getObject(bucket, "dir/big.bin").getDataInputStream());
            check(Arrays.equals(big, whole.toByteArray()), "the multipart object reads back byte for byte");

            // A ranged read.
            S3Object range = s3.getObject(bucket, "dir/big.bin", null, null, null, null, 5L * MIB - 10, 5L * MIB + 9);
            byte[] twenty = read(range.getDataInputStream());
            check(Arrays.equals(twenty, Arrays.copyOfRange(big, 5 * MIB - 10, 5 * MIB + 10)), "a ranged getObject reads across parts");

            // A server-side copy.
            s3.copyObject(bucket, "dir/small.bin", bucket, new S3Object("copy/small.bin"), false);
            check(Arrays.equals(read(s3.getObject(bucket, "copy/small.bin").getDataInputStream()), small), "copyObject copies the bytes");

            // Listings.
            S3Object[] all = s3.listObjects(bucket);
            check(all.length == 3, "listObjects lists the three objects");
            S3Object[] under = s3.listObjects(bucket, "dir/", null);
            check(under.length == 2, "listObjects with prefix dir/ lists two");
            org.jets3t.service.StorageObjectsChunk chunk = s3.listObjectsChunked(bucket, "", "/", 1000, null);
            check(Arrays.asList(chunk.getCommonPrefixes()).containsAll(Arrays.asList("dir/", "copy/")), "a listing with delimiter / gives the common prefixes");

            for (S3Object o : all) {
                s3.deleteObject(bucket, o.getKey());
            }
            check(s3.listObjects(bucket).length == 0, "deleteObject removes each object");
            s3.deleteBucket(bucket);
            ok("deleteBucket");
            System.out.println("jets3t suite: all checks passed");
        } catch (Throwable e) {
            System.err.println("FAIL: " + e);
            e.printStackTrace();
            status = 1;
            try {
                for (S3Object o : s3.listObjects(bucket)) {
                    s3.deleteObject(bucket, o.getKey());
                }
                s3.deleteBucket(bucket);
            } catch (Exception ignored) {
                // The bucket may not exist.
            }
        }
        System.exit(status);
    }
}
