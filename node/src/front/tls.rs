//! TLS on a front (HTTP or S3): the certificate and key come from PEM files and are read
//! again whenever either file's contents change, so a renewed certificate (cert-manager, an
//! ACME client, an operator's `cp`) is served without a restart.
//!
//! A check every `FRONT_TLS_RELOAD_CHECK_MS` hashes both files. Only a pair that parses and
//! whose key matches the certificate replaces the one being served; anything else (a key from
//! another pair, a file that is not PEM) keeps the old pair and, once two checks in a row found
//! the same files, logs one WARN per distinct failure and counts in
//! `cairn_front_tls_reload_failures_total`. (A pair replaced file by file is seen half-way by
//! one check and whole by the next, and is no failure.) Each handshake takes the
//! pair current at its start; connections already open keep theirs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

use crate::config::{FrontTlsError, FrontTlsFiles};
use crate::figures::TlsFigures;
use crate::limits::{FRONT_TLS_HANDSHAKE_MS_MAX, FRONT_TLS_RELOAD_CHECK_MS};

/// What a front's accept loop needs: the acceptor, and the task that reloads its pair.
pub(crate) struct FrontTls {
    acceptor: tokio_rustls::TlsAcceptor,
    pair: Arc<ReloadingPair>,
    reloader: JoinHandle<()>,
}

impl Drop for FrontTls {
    fn drop(&mut self) {
        self.reloader.abort();
    }
}

impl FrontTls {
    /// Loads the pair (an error if it cannot be served) and starts watching its files. The
    /// front speaks HTTP/1.1, and says so in ALPN.
    pub fn start(
        files: &FrontTlsFiles,
        figures: Arc<TlsFigures>,
    ) -> Result<FrontTls, FrontTlsError> {
        let (pair, fingerprint) = load(files)?;
        let pair = Arc::new(ReloadingPair {
            files: files.clone(),
            current: RwLock::new(Arc::new(pair)),
            fingerprint: Mutex::new(fingerprint),
            last_failure: Mutex::new(None),
            pending: Mutex::new(None),
            figures,
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| pair.error(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(pair.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let watched = pair.clone();
        let reloader = crate::task::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(FRONT_TLS_RELOAD_CHECK_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let pair = watched.clone();
                // Reading files blocks; it is small, and off the runtime's threads.
                let _ = crate::task::spawn_blocking(move || pair.check()).await;
            }
        });
        Ok(FrontTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            pair,
            reloader,
        })
    }

    /// The TLS side of an accepted connection, or `None` when the handshake failed or took
    /// longer than `FRONT_TLS_HANDSHAKE_MS_MAX` (logged at debug: a port scanner or a client
    /// that does not trust the certificate is not the operator's problem).
    pub async fn accept<IO>(&self, io: IO) -> Option<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let handshake = self.acceptor.accept(io);
        let limit = Duration::from_millis(FRONT_TLS_HANDSHAKE_MS_MAX);
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(front = self.pair.figures.front, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(front = self.pair.figures.front, "TLS handshake timed out");
                None
            }
        }
    }
}

/// The pair a front serves, replaced when its files change to another valid pair.
pub(crate) struct ReloadingPair {
    files: FrontTlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// BLAKE3 of both files' contents as last read.
    fingerprint: Mutex<blake3::Hash>,
    /// The last failure logged, so that one broken pair is logged once, not every check.
    last_failure: Mutex<Option<String>>,
    /// Files that failed once: a failure if the next check finds them unchanged.
    pending: Mutex<Option<blake3::Hash>>,
    figures: Arc<TlsFigures>,
}

impl std::fmt::Debug for ReloadingPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingPair")
            .field("front", &self.figures.front)
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl ReloadingPair {
    /// Reads the files again if they changed, and serves the new pair if it is valid. A pair
    /// that cannot be served counts as a failure only when the next check finds the same files
    /// again: a certificate and key replaced one after the other are caught half-way by a
    /// check now and then, and are whole by the next.
    fn check(&self) {
        let seen = fingerprint(&self.files);
        let fingerprint = match &seen {
            Ok(f) => *f,
            // Unreadable: the same "files" as another unreadable look.
            Err(_) => blake3::hash(b"unreadable"),
        };
        if fingerprint == *self.fingerprint.lock() {
            // Back to the pair being served: a later failure is news again.
            *self.last_failure.lock() = None;
            *self.pending.lock() = None;
            return;
        }
        let result = seen.and_then(|_| load(&self.files));
        match result {
            Ok((pair, fingerprint)) => {
                *self.current.write() = Arc::new(pair);
                *self.fingerprint.lock() = fingerprint;
                *self.last_failure.lock() = None;
                *self.pending.lock() = None;
                self.figures.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    front = self.figures.front,
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded"
                );
            }
            Err(e) => {
                let mut pending = self.pending.lock();
                if *pending == Some(fingerprint) {
                    self.failed(e);
                } else {
                    *pending = Some(fingerprint);
                }
            }
        }
    }

    fn failed(&self, e: FrontTlsError) {
        let mut last = self.last_failure.lock();
        if last.as_deref() != Some(e.problem.as_str()) {
            self.figures.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                front = self.figures.front,
                error = %e,
                "TLS certificate not reloaded; still serving the previous one"
            );
            *last = Some(e.problem);
        }
    }

    fn error(&self, problem: String) -> FrontTlsError {
        error(&self.files, problem)
    }
}

/// Whether the pair can be served: the files readable, the key its owner's only, the key the
/// certificate's (`cairn config check`).
pub fn check(files: &FrontTlsFiles) -> Result<(), FrontTlsError> {
    load(files).map(drop)
}

fn error(files: &FrontTlsFiles, problem: String) -> FrontTlsError {
    FrontTlsError {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        problem,
    }
}

fn read(files: &FrontTlsFiles, path: &Path) -> Result<Vec<u8>, FrontTlsError> {
    std::fs::read(path).map_err(|e| error(files, format!("cannot read {}: {e}", path.display())))
}

fn fingerprint(files: &FrontTlsFiles) -> Result<blake3::Hash, FrontTlsError> {
    let cert = read(files, &files.cert)?;
    let key = read(files, &files.key)?;
    Ok(blake3::Hasher::new().update(&cert).update(&key).finalize())
}

/// Parses the pair and checks that the key is the certificate's; returns it with the
/// fingerprint of the bytes it came from.
fn load(files: &FrontTlsFiles) -> Result<(CertifiedKey, blake3::Hash), FrontTlsError> {
    crate::config::check_secret_file(&files.key).map_err(|e| error(files, e.to_string()))?;
    let cert = read(files, &files.cert)?;
    let key = read(files, &files.key)?;
    let fingerprint = blake3::Hasher::new().update(&cert).update(&key).finalize();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| error(files, format!("the certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(error(
            files,
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| error(files, format!("the key file holds no private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let pair = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        error(
            files,
            format!("the key does not serve the certificate: {e}"),
        )
    })?;
    Ok((pair, fingerprint))
}

/// A front's connection: plain TCP, or TLS over it.
pub(crate) enum FrontStream<IO> {
    Plain(IO),
    Tls(Box<tokio_rustls::server::TlsStream<IO>>),
}

impl<IO> FrontStream<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// The connection as the front serves it: through TLS when the front has it (`None` when
    /// the handshake failed).
    pub async fn open(tls: Option<&FrontTls>, io: IO) -> Option<FrontStream<IO>> {
        match tls {
            None => Some(FrontStream::Plain(io)),
            Some(tls) => Some(FrontStream::Tls(Box::new(tls.accept(io).await?))),
        }
    }
}

impl<IO> tokio::io::AsyncRead for FrontStream<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            FrontStream::Plain(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            FrontStream::Tls(io) => std::pin::Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl<IO> tokio::io::AsyncWrite for FrontStream<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            FrontStream::Plain(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            FrontStream::Tls(io) => std::pin::Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            FrontStream::Plain(io) => std::pin::Pin::new(io).poll_flush(cx),
            FrontStream::Tls(io) => std::pin::Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            FrontStream::Plain(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            FrontStream::Tls(io) => std::pin::Pin::new(io).poll_shutdown(cx),
        }
    }
}
