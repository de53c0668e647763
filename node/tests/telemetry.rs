//! OpenTelemetry: with OTEL_EXPORTER_OTLP_ENDPOINT set, the node exports its spans over
//! OTLP/HTTP. A minimal collector on 127.0.0.1 in this test receives them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the collector saw: (path, content type, body length) per request.
type Seen = Arc<Mutex<Vec<(String, String, usize)>>>;

/// Accepts OTLP/HTTP posts and records them.
fn collector() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (mut len, mut ctype) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if let Some(v) = h.strip_prefix("content-type:") {
                            ctype = v.trim().to_string();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    s.lock().unwrap().push((path, ctype, len));
                    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    (url, seen)
}

#[test]
fn spans_are_exported_over_otlp_http() {
    let (endpoint, seen) = collector();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_valori-node"))
        .args([
            "--http-addr",
            "127.0.0.1",
            "--http-port",
            "0",
            "--no-grpc",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("VALORI_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("valori-node listening on ")
        .expect("listening line")
        .to_string();
    valori_node::use_ring_for_tls();
    let http = reqwest::blocking::Client::new();
    for _ in 0..3 {
        let r = http
            .post(format!("{url}/v1/records"))
            .header("content-type", "application/json")
            .body(r#"{"vector": [1, 2, 3]}"#)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // SIGTERM: the node drains, then flushes its spans before exiting.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "no OTLP export arrived");
    assert!(
        seen.iter()
            .all(|(p, c, n)| p == "/v1/traces" && c == "application/x-protobuf" && *n > 0),
        "{seen:?}"
    );
}
