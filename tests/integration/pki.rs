//! Test certificates made with the `openssl` command line (not our code): a test CA, a server certificate it
//! signed for `DNS:localhost, IP:127.0.0.1`, a client certificate for [`CLIENT_CN`], and a second CA that signed
//! nothing here. `scripts/stack up` installs `openssl` when it is missing.

use std::path::PathBuf;
use std::process::Command;

/// The common name of the client certificate.
pub const CLIENT_CN: &str = "costsim_cert";

/// A folder removed with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to its end, failing the test with its output if it fails or cannot start.
pub fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's certificates and keys, in a folder of their own.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// Makes the CAs and certificates with `openssl` (P-256 keys: quick to make, and rustls takes them).
    pub fn new() -> Pki {
        let pki = Pki { dir: TempDir::new("costsim-pki") };
        pki.ca("ca", "costsim test CA");
        pki.ca("other-ca", "costsim other CA");
        pki.leaf("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
        pki.leaf("client", CLIENT_CN, "extendedKeyUsage=clientAuth\n");
        pki
    }

    fn openssl(&self, args: &[&str], what: &str) {
        run(Command::new("openssl").args(args).current_dir(&self.dir.0), what);
    }

    fn ca(&self, name: &str, cn: &str) {
        let (key, crt, subject) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={cn}"));
        let args = ["req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let args = [&args[..], &["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject]].concat();
        self.openssl(&args, &format!("openssl: the CA {name}"));
    }

    /// A certificate the test CA signs, with the extensions given (an `openssl x509 -extfile`).
    fn leaf(&self, name: &str, cn: &str, extensions: &str) {
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        let extensions =
            format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}");
        std::fs::write(self.dir.0.join(&ext), extensions).unwrap();
        let subject = format!("/CN={cn}");
        let args = ["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let args = [&args[..], &["-keyout", &key, "-out", &csr, "-subj", &subject]].concat();
        self.openssl(&args, &format!("openssl: the request of {name}"));
        let args = ["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"];
        let args = [&args[..], &["-out", &crt, "-days", "2", "-extfile", &ext]].concat();
        self.openssl(&args, &format!("openssl: the certificate of {name}"));
    }

    /// A file of the folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.0.join(file)
    }

    /// The CA that signed the server's and the client's certificates.
    pub fn ca_cert(&self) -> String {
        self.path("ca.crt").display().to_string()
    }

    /// A CA that signed neither.
    pub fn other_ca_cert(&self) -> String {
        self.path("other-ca.crt").display().to_string()
    }
}
