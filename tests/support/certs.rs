//! Test certificates, made with the `openssl` command line in a test's
//! directory: CAs, and certificates they sign for servers and clients.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of PEM files: `<name>.pem` and `<name>.key` for each CA and
/// each certificate.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path) -> Certs {
        fs::create_dir_all(dir).unwrap();
        Certs { dir: dir.to_path_buf() }
    }

    pub fn pem(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// A self-signed CA named `name`.
    pub fn ca(&self, name: &str) -> PathBuf {
        let subject = format!("/CN={name}");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            path(&self.key(name)),
            "-out",
            path(&self.pem(name)),
        ]);
        self.pem(name)
    }

    /// A certificate `name` signed by CA `ca`, valid for `sans`
    /// (`IP:127.0.0.1,DNS:localhost`), for servers and clients alike.
    pub fn leaf(&self, ca: &str, name: &str, sans: &str) -> (PathBuf, PathBuf) {
        self.leaf_with_subject(ca, name, &format!("/CN={name}"), sans)
    }

    /// Like `leaf`, with the subject given whole (`/O=shop/CN=alice`).
    pub fn leaf_with_subject(
        &self,
        ca: &str,
        name: &str,
        subject: &str,
        sans: &str,
    ) -> (PathBuf, PathBuf) {
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        fs::write(
            &ext,
            format!(
                "subjectAltName={sans}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            path(&self.key(name)),
            "-out",
            path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&self.pem(ca)),
            "-CAkey",
            path(&self.key(ca)),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path(&ext),
            "-out",
            path(&self.pem(name)),
        ]);
        (self.pem(name), self.key(name))
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
