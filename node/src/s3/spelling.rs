//! The spelling of response header names: S3 writes `ETag`, `Content-Type`, `Last-Modified`
//! and so on, and some clients look them up case-sensitively (JetS3t, which older Artifactory
//! S3 providers are built on, finds no ETag in `etag` and fails every upload). HTTP/1.1 names
//! are case-insensitive and hyper writes them in lower case, unless a response carries
//! hyper's record of original spellings (the extension `preserve_header_case` makes for a
//! request, and uses for a response). That record cannot be built directly, so one is made
//! once, at start, by letting hyper parse a request that spells every name as S3 does, over
//! an in-memory connection; each response then carries a copy.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::http::Extensions;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

/// The response header names S3 spells with capitals (`x-amz-*` names are lower case).
const S3_SPELLINGS: [&str; 16] = [
    "Accept-Ranges",
    "Cache-Control",
    "Connection",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Date",
    "ETag",
    "Expires",
    "Last-Modified",
    "Location",
    "Retry-After",
    "Server",
];

/// The in-memory connection's buffer: the template request is about 400 bytes.
const TEMPLATE_BUFFER_BYTES: usize = 8192;

/// Extensions to give every response so that hyper writes its header names as S3 does; empty
/// (names in lower case) if hyper did not record the spellings.
pub async fn s3_spellings() -> Extensions {
    let (mut client, server) = tokio::io::duplex(TEMPLATE_BUFFER_BYTES);
    let captured: Arc<Mutex<Option<Extensions>>> = Arc::default();
    let sink = captured.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        *sink.lock() = Some(request.extensions().clone());
        async { Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new())) }
    });
    let mut head = String::from("GET / HTTP/1.1\r\nHost: spelling\r\n");
    for name in S3_SPELLINGS {
        // Values hyper accepts in a request; only the names matter.
        let value = match name {
            "Content-Length" => "0",
            "Connection" => "close",
            _ => "x",
        };
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let request = async move {
        // `Connection: close`: hyper closes once it has answered.
        let _ = client.write_all(head.as_bytes()).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut answer).await;
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(server), service);
    let _ = tokio::join!(connection, request);
    captured.lock().take().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_response_carrying_the_spellings_is_written_with_them() {
        let spellings = s3_spellings().await;
        assert!(!spellings.is_empty(), "hyper recorded no spellings");
        let (mut client, server) = tokio::io::duplex(TEMPLATE_BUFFER_BYTES);
        let service = hyper::service::service_fn(move |_: Request<Incoming>| {
            let spellings = spellings.clone();
            async move {
                let mut response =
                    Response::new(http_body_util::Full::new(bytes::Bytes::from("hi")));
                let headers = response.headers_mut();
                headers.insert("etag", "\"abc\"".parse().unwrap());
                headers.insert("content-type", "text/plain".parse().unwrap());
                headers.insert("x-amz-meta-build", "42".parse().unwrap());
                response.extensions_mut().extend(spellings);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), service);
        let request = async move {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            String::from_utf8(answer).unwrap()
        };
        let (_, answer) = tokio::join!(connection, request);
        for line in [
            "\r\nETag: \"abc\"",
            "\r\nContent-Type: text/plain",
            "\r\nx-amz-meta-build: 42",
            "\r\nContent-Length: 2",
        ] {
            assert!(answer.contains(line), "{line:?} not in {answer:?}");
        }
    }
}
