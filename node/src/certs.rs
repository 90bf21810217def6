//! `cairn certs`: a certificate authority and node and client certificates for a development or
//! test cluster. Production clusters bring certificates from their own CA.
//!
//! Node certificates name the node id (the TLS server name peers connect with) and
//! `node.cairn` (used to reach a seed node by address alone), and allow both server and client
//! use, since nodes call each other. Client certificates allow client use only.

use std::path::{Path, PathBuf};

use cairn_client::SEED_SERVER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Common name of the CAs `cairn certs` makes.
const CA_COMMON_NAME: &str = "Cairn cluster CA";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A cluster CA able to issue certificates.
pub struct Authority {
    pub cert_pem: String,
    key: KeyPair,
    params: CertificateParams,
}

impl Authority {
    /// The CA's parameters. Rebuilt identically when a CA is loaded from disk, so the issuer
    /// name and key identifier of new certificates match the CA certificate.
    fn params() -> Result<CertificateParams, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(params)
    }

    /// A new self-signed CA.
    pub fn new() -> Result<Authority, CertError> {
        let key = KeyPair::generate()?;
        let params = Authority::params()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key,
            params,
        })
    }

    /// The CA kept in `dir` (`ca.pem`, `ca.key`), or a new one written there.
    pub fn in_dir(dir: &Path) -> Result<Authority, CertError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            narrow_secret(&key_path)?;
            let cert_pem = read(&cert_path)?;
            let key = KeyPair::from_pem(&read(&key_path)?)?;
            return Ok(Authority {
                cert_pem,
                key,
                params: Authority::params()?,
            });
        }
        let ca = Authority::new()?;
        write(&cert_path, &ca.cert_pem)?;
        write_secret(&key_path, &ca.key.serialize_pem())?;
        Ok(ca)
    }

    fn issue(
        &self,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = usages;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A node certificate: server and client use, naming the node id and `node.cairn`.
    pub fn issue_node(&self, id: &str) -> Result<Issued, CertError> {
        self.issue(
            vec![id.to_string(), SEED_SERVER_NAME.to_string()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate: client use only.
    pub fn issue_client(&self, name: &str) -> Result<Issued, CertError> {
        self.issue(
            vec![name.to_string()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a secret (a private key, a token, credentials) readable by its owner only: mode 0600
/// from its creation on, and an existing file's mode is narrowed too.
fn write_secret(path: &Path, text: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

/// Narrows a secret written by an earlier version (mode 0644) to its owner.
fn narrow_secret(path: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        CertError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Narrows every private key (`*.key`) in `dir` to its owner.
pub fn narrow_keys(dir: &Path) -> Result<(), CertError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "key") {
            narrow_secret(&path)?;
        }
    }
    Ok(())
}

/// Writes `dir/ca.pem` (and `ca.key`) if absent, then `{name}.pem` and `{name}.key` for every
/// node and client. Returns the files written.
pub fn generate(
    dir: &Path,
    nodes: &[String],
    clients: &[String],
) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = Authority::in_dir(dir)?;
    let mut written = vec![dir.join("ca.pem")];
    let issued = nodes
        .iter()
        .map(|id| Ok((id, ca.issue_node(id)?)))
        .chain(
            clients
                .iter()
                .map(|name| Ok((name, ca.issue_client(name)?))),
        )
        .collect::<Result<Vec<_>, CertError>>()?;
    for (name, cert) in issued {
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        write(&cert_path, &cert.cert_pem)?;
        write_secret(&key_path, &cert.key_pem)?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}

/// Random bytes in a generated HTTP bearer token (written as hex).
pub const HTTP_TOKEN_RANDOM_BYTES: usize = 32;

/// Writes `dir/http.token` (a random bearer token for the HTTP front) unless it exists; returns
/// its path.
pub fn generate_http_token(dir: &Path) -> Result<PathBuf, CertError> {
    let path = dir.join("http.token");
    if path.exists() {
        narrow_secret(&path)?;
        return Ok(path);
    }
    let bytes = random_bytes::<HTTP_TOKEN_RANDOM_BYTES>(&path)?;
    write_secret(&path, &format!("{}\n", hex(&bytes)))?;
    Ok(path)
}

/// `N` bytes from the system's random source (`path` names the file they are for, in errors).
fn random_bytes<const N: usize>(path: &Path) -> Result<[u8; N], CertError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("the system random source failed"),
        })?;
    Ok(bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes in a generated S3 secret key (hex-encoded: 40 characters).
pub const S3_SECRET_RANDOM_BYTES: usize = 20;

// Generated secrets, written as hex, are long enough for the node to accept them.
const _: () = assert!(2 * HTTP_TOKEN_RANDOM_BYTES >= crate::limits::HTTP_TOKEN_BYTES_MIN);
const _: () = assert!(2 * S3_SECRET_RANDOM_BYTES >= crate::limits::S3_SECRET_KEY_BYTES_MIN);

/// Writes `dir/s3-credentials.toml` with one random access key for the S3 front, and beside
/// it the key that seals managed keys' secrets (`config::KEY_ENCRYPTION_KEY_FILE_NAME`), each
/// unless it exists; returns the credentials file's path.
pub fn generate_s3_credentials(dir: &Path) -> Result<PathBuf, CertError> {
    let sealing = dir.join(crate::config::KEY_ENCRYPTION_KEY_FILE_NAME);
    if sealing.exists() {
        narrow_secret(&sealing)?;
    } else {
        let key = random_bytes::<32>(&sealing)?;
        write_secret(&sealing, &format!("{}\n", hex(&key)))?;
    }
    let path = dir.join("s3-credentials.toml");
    if path.exists() {
        narrow_secret(&path)?;
        return Ok(path);
    }
    let bytes = random_bytes::<{ 5 + S3_SECRET_RANDOM_BYTES }>(&path)?;
    let text = format!(
        "# Access keys of the S3 front. Each [[keys]] table is one key; they may use every\n\
         # bucket.\n\
         [[keys]]\naccess_key = \"CAIRN{}\"\nsecret_key = \"{}\"\n",
        hex(&bytes[..5]).to_uppercase(),
        hex(&bytes[5..])
    );
    write_secret(&path, &text)?;
    Ok(path)
}
