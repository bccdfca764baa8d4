//! Certificates for TLS tests.

/// A throwaway PKI made with openssl: a CA, the TLS terminator's certificate for 127.0.0.1, and
/// client certificates (`gateway`, and an `intruder` the provider does not know), each signed
/// by the CA, with P-256 keys.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the CA and the certificates in a temporary directory.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl must be installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=test CA",
            "-days",
            "2",
        ]);
        run(&ca);
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("gateway", "gateway", "extendedKeyUsage=clientAuth\n"),
            ("intruder", "intruder", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN={cn}");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            run(&req);
            let extfile = format!("{name}.ext");
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &extfile,
            ]);
        }
        Pki { dir }
    }

    /// The path of one of its files (`ca.pem`, `gateway.pem`, `gateway.key`, ...).
    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}
