//! Real `valori-node` processes on 127.0.0.1 for the operator's tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The `valori-node` binary: `$VALORI_NODE_BIN`, or the one the workspace build put beside
/// this test's directory (built here when missing).
pub fn node_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VALORI_NODE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("valori-node");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "valori-node", "--bin", "valori-node"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building valori-node failed");
    }
    bin
}

pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Proc {
    pub fn start(dir: &Path, args: &[&str]) -> Proc {
        Proc::start_on(dir, 0, args, &[])
    }

    /// Starts a node on HTTP port `port` (0: any) with these environment variables besides
    /// (a pod's `VALORI_*` settings; the flags here win over them).
    pub fn start_on(dir: &Path, port: u16, args: &[&str], env: &[(String, String)]) -> Proc {
        let mut child = Command::new(node_binary())
            .args([
                "--http-addr",
                "127.0.0.1",
                "--http-port",
                &port.to_string(),
                "--no-grpc",
                "--data-dir",
            ])
            .arg(dir)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("VALORI_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("valori-node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the node prints its address").unwrap();
            if let Some(u) = line.strip_prefix("valori-node listening on ") {
                break u.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Proc { child, url }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn get(url: &str) -> Value {
    http().get(url).send().unwrap().json().unwrap()
}

pub fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pred() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn vector(i: u64) -> Vec<f64> {
    (0..4)
        .map(|j| ((i * 7 + j * 3) % 31) as f64 / 4.0)
        .collect()
}

/// A test CA and a certificate it signs for 127.0.0.1 (openssl); returns (CA PEM file,
/// certificate file, key file).
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: PathBuf| p.display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "1",
            "-subj",
            "/CN=valori-test-ca",
            "-keyout",
            &s(p("ca.key")),
            "-out",
            &s(p("ca.pem")),
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            &s(p("key.pem")),
            "-out",
            &s(p("leaf.csr")),
        ],
    ]
    .concat());
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &s(p("leaf.csr")),
        "-CA",
        &s(p("ca.pem")),
        "-CAkey",
        &s(p("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &s(p("ext.cnf")),
        "-out",
        &s(p("cert.pem")),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}
