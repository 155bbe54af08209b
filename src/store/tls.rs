//! TLS to PostgreSQL with libpq's settings: `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in the URL, else
//! libpq's `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`. sqlx makes the handshake; this module reads
//! the settings as libpq does where sqlx reads them otherwise, and refuses what neither implements, so that no
//! setting is silently weakened:
//!
//! - `sslmode=allow` is refused: sqlx connects as with `disable` (libpq's plaintext-then-TLS is not there).
//! - An unknown `sslmode` is refused, in `PGSSLMODE` too (sqlx would take `prefer` there).
//! - `require` with a root certificate verifies the chain, as `verify-ca` (libpq's rule).
//! - `sslrootcert=system` trusts the system's CAs and needs `verify-full`, its default then (libpq 16's rule).
//! - Other `ssl…` parameters (`sslcrl`, `sslpassword`, `sslsni`, ...) are refused, not ignored as sqlx would.
//! - The certificate files the mode will read are read at start, so a missing one is named with its parameter;
//!   `sslcert` and `sslkey` go together.
//! - On a Unix socket the mode does not apply (the server never offers TLS there; sqlx would ask).
//!
//! Kept from sqlx on purpose, and documented in the README: `prefer` whose handshake fails after the server
//! accepted TLS fails (libpq retries in plaintext: whoever can break the handshake could downgrade the session);
//! `verify-ca` and `verify-full` without `sslrootcert` trust the system's CAs (libpq would read
//! `~/.postgresql/root.crt`); and the CAs of `sslrootcert` are trusted in addition to the system's, not instead
//! of them (libpq trusts them alone), which is why `verify-full`, not `verify-ca`, is the mode to use.

use std::path::{Path, PathBuf};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The URL parameters sqlx reads for each setting; the first is libpq's name, the others sqlx's aliases.
const MODE: &[&str] = &["sslmode", "ssl-mode"];
const ROOT_CERT: &[&str] = &["sslrootcert", "ssl-root-cert", "ssl-ca"];
const CERT: &[&str] = &["sslcert", "ssl-cert"];
const KEY: &[&str] = &["sslkey", "ssl-key"];

/// libpq's TLS modes that are implemented (`allow` is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, unverified; plaintext when it does not. A failed handshake fails.
    Prefer,
    /// TLS or nothing, unverified (verified as `VerifyCa` when a root certificate is given).
    Require,
    /// TLS with a certificate chain to a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a certificate chain to a trusted CA that names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The CAs a verifying mode trusts beyond the system's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert=system`: the system's alone.
    System,
    /// The certificates in this file.
    File(PathBuf),
}

/// The TLS settings of one URL, as libpq reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode in effect.
    pub mode: SslMode,
    /// `sslrootcert`, if given.
    pub root: Option<RootCerts>,
    /// `sslcert` and `sslkey`, if given.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// One setting as found: its value and the name it was found under (a URL parameter or an environment variable).
struct Found {
    value: String,
    name: &'static str,
}

impl TlsSettings {
    /// Reads the TLS settings of `url`, else of the environment (`env` looks a variable up), and checks that the
    /// files they name can be read; the error names the parameter or variable, never the URL's password.
    pub fn read(url: &url::Url, env: &dyn Fn(&str) -> Option<String>) -> Result<TlsSettings, String> {
        if let Some((key, _)) = url.query_pairs().find(|(k, _)| k.starts_with("ssl") && !known(k)) {
            return Err(format!(
                "the parameter {key} is not supported (the TLS parameters are sslmode, sslrootcert, sslcert and sslkey)"
            ));
        }
        let mode = find(url, MODE, "PGSSLMODE", env)?;
        let root = find(url, ROOT_CERT, "PGSSLROOTCERT", env)?;
        let explicit = match &mode {
            Some(found) => Some(SslMode::parse(&found.value).ok_or_else(|| unknown_mode(found))?),
            None => None,
        };
        let roots = root.as_ref().map(|found| match found.value.as_str() {
            "system" => RootCerts::System,
            path => RootCerts::File(PathBuf::from(path)),
        });
        let mode = match (explicit, &roots) {
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (Some(weaker), Some(RootCerts::System)) if weaker != SslMode::VerifyFull => {
                let found = mode.as_ref().expect("an explicit mode was found");
                return Err(format!(
                    "{}={} may not be used with sslrootcert=system, which needs sslmode=verify-full: any public CA \
                     issues a certificate for a name its holder controls",
                    found.name, found.value
                ));
            }
            // libpq: "if a root CA file exists, the behavior of sslmode=require will be the same as that of
            // verify-ca".
            (Some(SslMode::Require), Some(RootCerts::File(_))) => SslMode::VerifyCa,
            (explicit, _) => explicit.unwrap_or(SslMode::Prefer),
        };
        if let (true, Some(RootCerts::File(path)), Some(found)) = (mode.verifies(), &roots, &root) {
            readable(path, found.name)?;
        }
        let client = match (find(url, CERT, "PGSSLCERT", env)?, find(url, KEY, "PGSSLKEY", env)?) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(found), None) | (None, Some(found)) => {
                return Err(format!("{} is set without its pair: sslcert and sslkey go together", found.name));
            }
        };
        let client = match client {
            Some((cert, key)) if mode != SslMode::Disable => {
                let (cert_path, key_path) = (PathBuf::from(&cert.value), PathBuf::from(&key.value));
                readable(&cert_path, cert.name)?;
                readable(&key_path, key.name)?;
                Some((cert_path, key_path))
            }
            _ => None,
        };
        Ok(TlsSettings { mode, root: roots, client })
    }

    /// Sets the options' TLS to these settings (sqlx parsed the same URL and environment its own way).
    pub fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        // libpq ignores sslmode on a Unix socket, where the server never offers TLS (sqlx would ask, and so fail
        // with require).
        let unix_socket = options.get_socket().is_some() || options.get_host().starts_with('/');
        let mut options = options.ssl_mode(match self.mode {
            _ if unix_socket => PgSslMode::Disable,
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
        options = match &self.root {
            Some(RootCerts::File(path)) => options.ssl_root_cert(path),
            // sqlx took `system` for a file name; no certificate of our own leaves the system's CAs alone.
            Some(RootCerts::System) => options.ssl_root_cert_from_pem(Vec::new()),
            None => options,
        };
        if let Some((cert, key)) = &self.client {
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        options
    }

    /// When `err` is a failure of TLS (sqlx reports the handshake's as I/O errors), what was asked for and, for
    /// the usual certificate problems, what is wrong, to put before sqlx's reason.
    pub fn failure(&self, err: &sqlx::Error) -> Option<String> {
        let rustls = match err {
            sqlx::Error::Tls(e) => e.downcast_ref::<rustls::Error>(),
            sqlx::Error::Io(e) => Some(e.get_ref()?.downcast_ref::<rustls::Error>()?),
            _ => return None,
        };
        use rustls::CertificateError as E;
        let why = match rustls {
            Some(rustls::Error::InvalidCertificate(E::UnknownIssuer)) => {
                Some("the server's certificate is not signed by a CA this client trusts")
            }
            Some(rustls::Error::InvalidCertificate(E::NotValidForName | E::NotValidForNameContext { .. })) => {
                Some("the server's certificate does not name the host of the URL")
            }
            Some(rustls::Error::InvalidCertificate(E::Expired | E::ExpiredContext { .. })) => {
                Some("the server's certificate has expired")
            }
            _ => None,
        };
        Some(match why {
            Some(why) => format!("{}: {why}", self.describe()),
            None => self.describe(),
        })
    }

    /// What a failed TLS connection was asked for: the mode and whom it trusts.
    pub fn describe(&self) -> String {
        let mode = self.mode.as_str();
        match (&self.root, self.mode.verifies()) {
            (_, false) => format!("TLS failed (sslmode={mode})"),
            (Some(RootCerts::File(path)), true) => format!(
                "TLS failed (sslmode={mode}, trusting the CAs in sslrootcert {} and the system's)",
                path.display()
            ),
            (_, true) => format!("TLS failed (sslmode={mode}, trusting the system's CAs)"),
        }
    }
}

fn known(key: &str) -> bool {
    [MODE, ROOT_CERT, CERT, KEY].iter().any(|names| names.contains(&key))
}

/// The setting from the URL (its last occurrence under any of `names`, as sqlx reads it), else from `var`.
fn find(
    url: &url::Url,
    names: &[&'static str],
    var: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Found>, String> {
    let in_url = url.query_pairs().filter(|(k, _)| names.contains(&k.as_ref())).last();
    let found = match in_url {
        Some((_, value)) => Found { value: value.into_owned(), name: names[0] },
        None => match env(var) {
            Some(value) => Found { value, name: var },
            None => return Ok(None),
        },
    };
    if found.value.is_empty() {
        return Err(format!("{} is empty", found.name));
    }
    Ok(Some(found))
}

fn unknown_mode(found: &Found) -> String {
    let (name, value) = (found.name, &found.value);
    if value == "allow" {
        return format!(
            "{name}=allow is not supported (sqlx would connect in plaintext and never try TLS): use prefer, which \
             tries TLS first, or disable"
        );
    }
    format!("{name}={value} is unknown (expected disable, prefer, require, verify-ca or verify-full)")
}

/// Reads the file a TLS setting names, so that a missing one is reported at start with its setting.
fn readable(path: &Path, name: &str) -> Result<(), String> {
    std::fs::read(path).map(drop).map_err(|e| format!("{name} {}: cannot read it: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(url: &str) -> Result<TlsSettings, String> {
        read_with(url, &[])
    }

    fn read_with(url: &str, vars: &[(&str, &str)]) -> Result<TlsSettings, String> {
        let env = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        TlsSettings::read(&url::Url::parse(url).unwrap(), &env)
    }

    /// A file that exists for the test's length.
    struct File(PathBuf);

    impl File {
        fn new() -> File {
            let path = std::env::temp_dir().join(format!("costsim-tls-{}.pem", uuid::Uuid::new_v4()));
            std::fs::write(&path, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
            File(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn without_settings_the_mode_is_prefer_as_in_libpq() {
        let tls = read("postgres://db/x").unwrap();
        assert_eq!(tls, TlsSettings { mode: SslMode::Prefer, root: None, client: None });
    }

    #[test]
    fn each_libpq_mode_but_allow_is_read_from_the_url_or_else_from_pgsslmode() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(read(&format!("postgres://db/x?sslmode={mode}")).unwrap().mode.as_str(), mode);
        }
        assert_eq!(read_with("postgres://db/x", &[("PGSSLMODE", "require")]).unwrap().mode, SslMode::Require);
        let url_wins = read_with("postgres://db/x?sslmode=disable", &[("PGSSLMODE", "verify-full")]);
        assert_eq!(url_wins.unwrap().mode, SslMode::Disable);
    }

    #[test]
    fn allow_is_refused_rather_than_silently_connecting_in_plaintext() {
        let err = read("postgres://db/x?sslmode=allow").unwrap_err();
        assert!(err.contains("sslmode=allow is not supported"), "{err}");
        let err = read_with("postgres://db/x", &[("PGSSLMODE", "allow")]).unwrap_err();
        assert!(err.starts_with("PGSSLMODE=allow is not supported"), "{err}");
    }

    #[test]
    fn an_unknown_mode_is_refused_naming_where_it_was_set() {
        let err = read("postgres://db/x?sslmode=sometimes").unwrap_err();
        assert!(err.starts_with("sslmode=sometimes is unknown (expected disable, prefer,"), "{err}");
        let err = read("postgres://db/x?sslmode=REQUIRE").unwrap_err();
        assert!(err.starts_with("sslmode=REQUIRE is unknown"), "{err}");
        let err = read_with("postgres://db/x", &[("PGSSLMODE", "on")]).unwrap_err();
        assert!(err.starts_with("PGSSLMODE=on is unknown"), "{err}");
    }

    #[test]
    fn require_with_a_root_certificate_verifies_it_as_verify_ca() {
        let ca = File::new();
        let tls = read(&format!("postgres://db/x?sslmode=require&sslrootcert={}", ca.path())).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root, Some(RootCerts::File(ca.0.clone())));
        let tls = read_with("postgres://db/x?sslmode=require", &[("PGSSLROOTCERT", ca.path())]).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        // Without one it stays unverified, and prefer never verifies (an attacker can answer "no TLS" anyway).
        assert_eq!(read("postgres://db/x?sslmode=require").unwrap().mode, SslMode::Require);
        let tls = read(&format!("postgres://db/x?sslrootcert={}", ca.path())).unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
    }

    #[test]
    fn system_roots_default_to_verify_full_and_refuse_a_weaker_mode() {
        let tls = read("postgres://db/x?sslrootcert=system").unwrap();
        assert_eq!((tls.mode, tls.root), (SslMode::VerifyFull, Some(RootCerts::System)));
        for weaker in ["disable", "prefer", "require", "verify-ca"] {
            let err = read(&format!("postgres://db/x?sslrootcert=system&sslmode={weaker}")).unwrap_err();
            assert!(err.contains(&format!("sslmode={weaker}")) && err.contains("verify-full"), "{err}");
        }
        assert!(read("postgres://db/x?sslrootcert=system&sslmode=verify-full").is_ok());
    }

    #[test]
    fn a_missing_certificate_file_is_named_with_its_parameter_when_the_mode_reads_it() {
        let url = "postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
        let err = read(url).unwrap_err();
        assert!(err.starts_with("sslrootcert /nonexistent/ca.pem: cannot read it"), "{err}");
        let err = read_with("postgres://db/x?sslmode=verify-ca", &[("PGSSLROOTCERT", "/nonexistent/ca.pem")]);
        assert!(err.unwrap_err().starts_with("PGSSLROOTCERT /nonexistent/ca.pem"));
        // A mode that does not verify does not read the root certificate.
        assert!(read("postgres://db/x?sslmode=prefer&sslrootcert=/nonexistent/ca.pem").is_ok());
        let err = read("postgres://db/x?sslcert=/nonexistent/c.pem&sslkey=/nonexistent/k.pem").unwrap_err();
        assert!(err.starts_with("sslcert /nonexistent/c.pem"), "{err}");
        assert!(read("postgres://db/x?sslmode=disable&sslcert=/nonexistent/c&sslkey=/nonexistent/k").is_ok());
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let (cert, key) = (File::new(), File::new());
        let tls = read(&format!("postgres://db/x?sslcert={}&sslkey={}", cert.path(), key.path())).unwrap();
        assert_eq!(tls.client, Some((cert.0.clone(), key.0.clone())));
        let err = read(&format!("postgres://db/x?sslcert={}", cert.path())).unwrap_err();
        assert!(err.contains("sslcert is set without its pair"), "{err}");
        let err = read_with("postgres://db/x", &[("PGSSLKEY", key.path())]).unwrap_err();
        assert!(err.contains("PGSSLKEY is set without its pair"), "{err}");
    }

    #[test]
    fn tls_parameters_sqlx_would_ignore_are_refused_and_others_left_to_sqlx() {
        for param in ["sslcrl=/x", "sslpassword=s3cret", "sslsni=0", "ssl_min_protocol_version=TLSv1.3"] {
            let err = read(&format!("postgres://db/x?{param}")).unwrap_err();
            let key = param.split('=').next().unwrap();
            assert!(err.contains(&format!("the parameter {key} is not supported")), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        assert!(read("postgres://db/x?application_name=a&ssl-mode=require").is_ok());
        assert!(read("postgres://db/x?sslmode=").unwrap_err().contains("sslmode is empty"));
    }

    #[test]
    fn tls_applies_to_tcp_and_not_to_a_unix_socket_as_in_libpq() {
        let mode = |url: &str| {
            let tls = read(url).unwrap();
            let options = tls.apply(url.parse().unwrap());
            format!("{:?}", options.get_ssl_mode())
        };
        assert_eq!(mode("postgres://db/x?sslmode=require"), "Require");
        assert_eq!(mode("postgres://%2Fvar%2Frun%2Fpostgresql/x?sslmode=require"), "Disable");
        assert_eq!(mode("postgres://db/x?host=/var/run/postgresql&sslmode=verify-full"), "Disable");
    }

    #[test]
    fn a_failure_is_described_by_the_mode_and_whom_it_trusts() {
        let ca = File::new();
        let tls = read(&format!("postgres://db/x?sslmode=verify-full&sslrootcert={}", ca.path())).unwrap();
        assert!(
            tls.describe().contains(&format!("sslmode=verify-full, trusting the CAs in sslrootcert {}", ca.path()))
        );
        assert_eq!(read("postgres://db/x?sslmode=require").unwrap().describe(), "TLS failed (sslmode=require)");
        let tls = read("postgres://db/x?sslrootcert=system").unwrap();
        assert_eq!(tls.describe(), "TLS failed (sslmode=verify-full, trusting the system's CAs)");
    }
}
