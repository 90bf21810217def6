// The AWS SDK for Go v2 suite of Cairn's S3 front: a multipart upload by the SDK's uploader
// with CRC32 checksums, downloaded part by part (partNumber) and whole; checksums returned
// with ChecksumMode ENABLED; GetObjectAttributes; presigned PUT and GET URLs used by a plain
// HTTP client; object tagging; a lifecycle configuration put and read back.
//
// Usage (scripts/s3-clients-test builds it with Debian's Go and SDK, and runs it):
//
//	CAIRN_S3_ENDPOINT=http://127.0.0.1:9401 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... cairn-s3-go
//
// Prints one "ok: ..." line per check and exits 1 at the first failure. Its bucket is removed
// at the end.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

const mib = 1024 * 1024

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func ok(what string) { fmt.Println("ok: " + what) }

func must(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func crc32b64(data []byte) string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE(data))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		fail("random bytes: %v", err)
	}
	return b
}

func main() {
	endpoint := os.Getenv("CAIRN_S3_ENDPOINT")
	key, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if endpoint == "" || key == "" || secret == "" {
		fail("set CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := s3.New(s3.Options{
		Region:           "us-east-1",
		Credentials:      credentials.NewStaticCredentialsProvider(key, secret, ""),
		EndpointResolver: s3.EndpointResolverFromURL(endpoint),
		UsePathStyle:     true,
	})
	fmt.Printf("aws-sdk-go-v2 (Debian's) against %s\n", endpoint)
	bucket := fmt.Sprintf("cairn-go-%x", randomBytes(6))
	_, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket})
	must(err, "CreateBucket")
	defer cleanup(client, bucket)
	ok("CreateBucket " + bucket)

	// A multipart upload by the SDK's uploader, CRC32 on every part.
	data := randomBytes(12*mib + 12345)
	uploader := manager.NewUploader(client, func(u *manager.Uploader) { u.PartSize = 5 * mib })
	up, err := uploader.Upload(ctx, &s3.PutObjectInput{
		Bucket: &bucket, Key: aws.String("big.bin"), Body: bytes.NewReader(data),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	must(err, "the uploader's multipart upload")
	ok("the SDK's uploader puts a 12 MiB object in three parts with CRC32 checksums")
	var raw []byte
	for _, start := range []int{0, 5 * mib, 10 * mib} {
		end := start + 5*mib
		if end > len(data) {
			end = len(data)
		}
		var sum [4]byte
		binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE(data[start:end]))
		raw = append(raw, sum[:]...)
	}
	composite := crc32b64(raw) + "-3"
	if up.UploadID == "" {
		fail("the uploader reports no upload id")
	}

	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: &bucket, Key: aws.String("big.bin"), ChecksumMode: types.ChecksumModeEnabled,
	})
	must(err, "HeadObject")
	if aws.ToString(head.ChecksumCRC32) != composite {
		fail("HeadObject's CRC32 is %q, not the composite %q", aws.ToString(head.ChecksumCRC32), composite)
	}
	ok("HeadObject with ChecksumMode ENABLED returns the composite CRC32")

	var joined []byte
	for part := int32(1); part <= 3; part++ {
		got, err := client.GetObject(ctx, &s3.GetObjectInput{
			Bucket: &bucket, Key: aws.String("big.bin"), PartNumber: part,
			ChecksumMode: types.ChecksumModeEnabled,
		})
		must(err, fmt.Sprintf("GetObject part %d", part))
		body, err := io.ReadAll(got.Body)
		must(err, "reading a part")
		got.Body.Close()
		if got.PartsCount != 3 {
			fail("GetObject part %d: parts count %d", part, got.PartsCount)
		}
		if aws.ToString(got.ChecksumCRC32) != crc32b64(body) {
			fail("GetObject part %d: CRC32 %q does not match its bytes", part, aws.ToString(got.ChecksumCRC32))
		}
		joined = append(joined, body...)
	}
	if !bytes.Equal(joined, data) {
		fail("the parts read by number do not make the object")
	}
	ok("GetObject by partNumber reads each part, with its CRC32 and the parts count")

	downloader := manager.NewDownloader(client, func(d *manager.Downloader) { d.PartSize = 4 * mib })
	buf := manager.NewWriteAtBuffer(nil)
	n, err := downloader.Download(ctx, buf, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("big.bin")})
	must(err, "the downloader")
	if n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		fail("the downloader's ranged reads give other bytes")
	}
	ok("the SDK's downloader reads the object back in ranges, byte for byte")

	attrs, err := client.GetObjectAttributes(ctx, &s3.GetObjectAttributesInput{
		Bucket: &bucket, Key: aws.String("big.bin"),
		ObjectAttributes: []types.ObjectAttributes{
			types.ObjectAttributesObjectSize, types.ObjectAttributesObjectParts, types.ObjectAttributesChecksum,
		},
	})
	must(err, "GetObjectAttributes")
	if attrs.ObjectSize != int64(len(data)) || attrs.ObjectParts == nil || attrs.ObjectParts.TotalPartsCount != 3 ||
		attrs.Checksum == nil || aws.ToString(attrs.Checksum.ChecksumCRC32) != composite {
		fail("GetObjectAttributes: size %d, parts %+v, checksum %+v", attrs.ObjectSize, attrs.ObjectParts, attrs.Checksum)
	}
	ok("GetObjectAttributes gives the size, the parts and the checksum")

	// Presigned URLs, used by a client that knows nothing of S3.
	presigner := s3.NewPresignClient(client)
	small := randomBytes(4096)
	put, err := presigner.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("presigned.bin")},
		s3.WithPresignExpires(15*time.Minute))
	must(err, "PresignPutObject")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, put.URL, bytes.NewReader(small))
	for name, values := range put.SignedHeader {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	must(err, "PUT to a presigned URL")
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fail("PUT to a presigned URL: status %d", resp.StatusCode)
	}
	get, err := presigner.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("presigned.bin")})
	must(err, "PresignGetObject")
	resp, err = http.Get(get.URL)
	must(err, "GET of a presigned URL")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, small) {
		fail("GET of a presigned URL: status %d, %d bytes", resp.StatusCode, len(body))
	}
	ok("presigned PUT and GET URLs work from a plain HTTP client")
	_, err = presigner.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("presigned.bin")},
		s3.WithPresignExpires(8*24*time.Hour))
	if err == nil {
		long, _ := presigner.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("presigned.bin")},
			s3.WithPresignExpires(8*24*time.Hour))
		resp, err = http.Get(long.URL)
		must(err, "GET of an 8-day presigned URL")
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 403 {
			fail("a presigned URL valid for 8 days was answered %d", resp.StatusCode)
		}
		ok("a presigned URL valid for more than 7 days is refused")
	}

	// Tagging, as Nexus soft-deletes.
	_, err = client.PutObjectTagging(ctx, &s3.PutObjectTaggingInput{
		Bucket: &bucket, Key: aws.String("presigned.bin"),
		Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("deleted"), Value: aws.String("true")}}},
	})
	must(err, "PutObjectTagging")
	tags, err := client.GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: &bucket, Key: aws.String("presigned.bin")})
	must(err, "GetObjectTagging")
	if len(tags.TagSet) != 1 || aws.ToString(tags.TagSet[0].Key) != "deleted" || aws.ToString(tags.TagSet[0].Value) != "true" {
		fail("GetObjectTagging gives %+v", tags.TagSet)
	}
	ok("PutObjectTagging then GetObjectTagging")

	// A lifecycle configuration, as Nexus puts it.
	_, err = client.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
		Bucket: &bucket,
		LifecycleConfiguration: &types.BucketLifecycleConfiguration{Rules: []types.LifecycleRule{{
			ID:         aws.String("Expire soft-deleted blobstore objects"),
			Status:     types.ExpirationStatusEnabled,
			Filter:     &types.LifecycleRuleFilterMemberTag{Value: types.Tag{Key: aws.String("deleted"), Value: aws.String("true")}},
			Expiration: &types.LifecycleExpiration{Days: 3},
		}}},
	})
	must(err, "PutBucketLifecycleConfiguration")
	lc, err := client.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &bucket})
	must(err, "GetBucketLifecycleConfiguration")
	if len(lc.Rules) != 1 || lc.Rules[0].Expiration == nil || lc.Rules[0].Expiration.Days != 3 {
		fail("GetBucketLifecycleConfiguration gives %+v", lc.Rules)
	}
	if tag, isTag := lc.Rules[0].Filter.(*types.LifecycleRuleFilterMemberTag); !isTag || aws.ToString(tag.Value.Key) != "deleted" {
		fail("the rule's filter reads back as %#v", lc.Rules[0].Filter)
	}
	ok("PutBucketLifecycleConfiguration then GetBucketLifecycleConfiguration")
	fmt.Println("go suite: all checks passed")
}

func cleanup(client *s3.Client, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket})
	if err == nil {
		for _, o := range list.Contents {
			client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: o.Key})
		}
	}
	client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
}
