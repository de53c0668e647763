//! TLS from certificate files: HTTP and gRPC are served over TLS with a certificate the test
//! makes (openssl), and clients that trust it talk to the node; plain text is refused.

mod common;

use std::process::Command;

use valori_node::grpc::pb;

/// A test CA and a server certificate it signs (webpki refuses a self-signed CA certificate as
/// a server's own). Returns (CA file, server certificate file, server key file).
fn make_certs(dir: &std::path::Path) -> (String, String, String) {
    let p = |n: &str| dir.join(n).display().to_string();
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
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
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
            &p("key.pem"),
            "-out",
            &p("leaf.csr"),
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_grpc_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let node = common::Node::start(
        &dir.path().join("data"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let url = node.url.clone();
    let cert2 = ca.clone();
    tokio::task::spawn_blocking(move || {
        let (ok, body) = curl(&["--cacert", &cert2, &format!("{url}/healthz")]);
        assert!(ok && body == "ok", "{body}");
        let (ok, body) = curl(&[
            "--cacert",
            &cert2,
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"vector": [1, 2, 3]}"#,
            &format!("{url}/v1/records"),
        ]);
        assert!(ok && body.contains("\"id\":0"), "{body}");
        // Without trusting the certificate, or in plain text, nothing gets through.
        assert!(!curl(&[&format!("{url}/healthz")]).0);
        let plain = url.replace("https://", "http://");
        let (ok, body) = curl(&[&format!("{plain}/healthz")]);
        assert!(
            !(ok && body == "ok"),
            "plain HTTP must not be served: {body}"
        );
    })
    .await
    .unwrap();

    let ca = tonic::transport::Certificate::from_pem(std::fs::read(&ca).unwrap());
    let channel = tonic::transport::Channel::from_shared(node.grpc_url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS connects");
    let mut c = pb::valori_client::ValoriClient::new(channel);
    let st = c
        .get_state(pb::StateRequest {
            seq: None,
            state_hash: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.seq, 1);
}

/// Replication over TLS: a follower verifies its https leader with the roots it is given
/// (SSL_CERT_FILE names the CA here), and streams its log.
#[test]
fn a_follower_replicates_from_an_https_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let leader = common::Node::start(
        &dir.path().join("leader"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let url = leader.url.clone();
    let follower = common::Node::try_start_env(
        &dir.path().join("f"),
        &["--replication-mode", "follower", "--leader-url", &url],
        &[("SSL_CERT_FILE", &ca), ("SSL_CERT_DIR", "/nonexistent")],
    )
    .unwrap();
    let fc = follower.client();
    // Write through the leader with curl (the test's client speaks plain HTTP only).
    let (ok, body) = curl(&[
        "--cacert",
        &ca,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"vector": [1, 2, 3]}"#,
        &format!("{url}/v1/records"),
    ]);
    assert!(ok && body.contains("\"seq\":1"), "{body}");
    common::wait_until(30, "the follower to replicate over TLS", || {
        fc.state().0 == 1
    });
}

/// A follower trusts its leader's private CA from `--leader-ca-file` (not the system's roots),
/// and presents the cluster's key, which the leader accepts beside the users' key.
#[test]
fn a_follower_trusts_the_leader_ca_file_and_presents_the_cluster_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let leader = common::Node::start(
        &dir.path().join("leader"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--api-key",
            "users-key",
            "--cluster-api-key",
            "cluster-key",
        ],
    );
    let url = leader.url.clone();
    let no_roots = [
        ("SSL_CERT_FILE", "/nonexistent"),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let follower = common::Node::try_start_env(
        &dir.path().join("f"),
        &[
            "--replication-mode",
            "follower",
            "--leader-url",
            &url,
            "--leader-ca-file",
            &ca,
            "--cluster-api-key",
            "cluster-key",
        ],
        &no_roots,
    )
    .unwrap();
    // Both keys write; any other is refused.
    for (k, want) in [("users-key", true), ("cluster-key", true), ("other", false)] {
        let (ok, body) = curl(&[
            "--cacert",
            &ca,
            "-H",
            &format!("authorization: Bearer {k}"),
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"vector": [1, 2, 3]}"#,
            &format!("{url}/v1/records"),
        ]);
        assert!(ok, "{body}");
        assert_eq!(body.contains("\"seq\""), want, "{k}: {body}");
    }
    let fc = follower.client().with_key("cluster-key");
    common::wait_until(30, "the follower to replicate over TLS", || {
        fc.state().0 == 2
    });

    // A CA file that cannot be read stops the node before it serves, naming the flag.
    let err = common::Node::try_start_env(
        &dir.path().join("g"),
        &[
            "--replication-mode",
            "follower",
            "--leader-url",
            &url,
            "--leader-ca-file",
            "/nonexistent/ca.crt",
        ],
        &no_roots,
    )
    .err()
    .unwrap();
    assert!(err.contains("--leader-ca-file"), "{err}");
}

/// A machine without CA roots (a bare container image) still follows a plain-HTTP leader.
#[test]
fn a_follower_without_ca_roots_follows_a_plain_leader() {
    let dir = tempfile::tempdir().unwrap();
    let leader = common::Node::start(&dir.path().join("leader"), &[]);
    let lc = leader.client();
    lc.post("/v1/records", serde_json::json!({"vector": [1.0, 2.0]}));
    let follower = common::Node::try_start_env(
        &dir.path().join("f"),
        &[
            "--replication-mode",
            "follower",
            "--leader-url",
            &leader.url,
        ],
        &[
            ("SSL_CERT_FILE", "/nonexistent"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )
    .unwrap();
    let fc = follower.client();
    common::wait_until(30, "the follower to replicate", || fc.state() == lc.state());
}

/// A client that finishes the TLS handshake and then sends nothing is closed after
/// `--header-timeout-ms` on both ports; it would otherwise hold a connection slot for good (the
/// gRPC server read the preface without a deadline).
#[test]
fn a_client_silent_after_its_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let node = common::Node::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--header-timeout-ms",
            "500",
        ],
    );
    for (url, alpn) in [(&node.url, "http/1.1"), (&node.grpc_url, "h2")] {
        let addr = url.split("://").nth(1).unwrap();
        // openssl's client holds the connection while its input stays open.
        let mut client = Command::new("openssl")
            .args(["s_client", "-connect", addr, "-alpn", alpn, "-brief"])
            .args(["-CAfile", &ca])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let closed = loop {
            if client.try_wait().unwrap().is_some() {
                break true;
            }
            if std::time::Instant::now() > deadline {
                client.kill().unwrap();
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = client.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("CONNECTION ESTABLISHED"), "{addr}: {said}");
        assert!(closed, "{addr} ({alpn}): still open after 20 s: {said}");
    }
}
