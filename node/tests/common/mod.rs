//! Test helpers: a real `valori-node` process on 127.0.0.1 with a real RocksDB in a temporary
//! directory, and a small JSON client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running node process.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub grpc_url: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
}

impl Node {
    /// Starts a node on a free port with `dir` as its data directory.
    pub fn start(dir: &Path, args: &[&str]) -> Node {
        Self::try_start(dir, args).expect("node starts")
    }

    /// Starts a node; `Err` carries its stderr if it exits before listening.
    pub fn try_start(dir: &Path, args: &[&str]) -> Result<Node, String> {
        Self::try_start_env(dir, args, &[])
    }

    /// Starts a node with these environment variables besides.
    pub fn try_start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Node, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_valori-node"));
        cmd.args(["--http-addr", "127.0.0.1", "--data-dir"])
            .arg(dir);
        // Free ports unless the test fixes them.
        for flag in ["--http-port", "--grpc-port"] {
            if !args.contains(&flag) {
                cmd.args([flag, "0"]);
            }
        }
        let mut child = cmd
            .args(args)
            .env("VALORI_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn valori-node");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut grpc_url = String::new();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("valori-node gRPC listening on ") {
                        grpc_url = url.to_string();
                    } else if let Some(url) = line.strip_prefix("valori-node listening on ") {
                        break url.to_string();
                    }
                }
                _ => {
                    let out = child.wait_with_output().expect("wait");
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[node] {line}");
            }
        });
        Ok(Node {
            child,
            url,
            grpc_url,
            dir: dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Stops this process (SIGKILL) and starts a new one on the same directory and flags.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<String> = self.args.clone();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        *self = Node::start(&self.dir.clone(), &refs);
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking JSON client.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub key: Option<String>,
    http: reqwest::blocking::Client,
}

/// Status and parsed JSON body (or the text as a JSON string when it is not JSON).
pub type Resp = (u16, Value);

impl Client {
    pub fn new(base: &str) -> Client {
        valori_node::use_ring_for_tls();
        Client {
            base: base.to_string(),
            key: None,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    pub fn with_key(mut self, key: &str) -> Client {
        self.key = Some(key.to_string());
        self
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Resp, reqwest::Error> {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, reqwest::Error> {
        let url = format!("{}{}", self.base, path);
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, url);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.try_call(method, path, body).expect("request")
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(&body))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None)
    }

    /// Sends raw bytes with a content type.
    pub fn raw(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self
            .http
            .request(m, format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body);
        self.send(req).expect("request")
    }

    pub fn bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let mut req = self.http.get(format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().expect("request");
        (resp.status().as_u16(), resp.bytes().unwrap().to_vec())
    }

    /// `(seq, chain_hash, state_hash)` of the node.
    pub fn state(&self) -> (u64, String, String) {
        let (s, v) = self.get("/v1/state");
        assert_eq!(s, 200, "{v}");
        (
            v["seq"].as_u64().unwrap(),
            v["chain_hash"].as_str().unwrap().to_string(),
            v["state_hash"].as_str().unwrap().to_string(),
        )
    }
}

/// Replays a stopped node's log from the beginning into a fresh kernel (the "clean replay").
pub fn replay_log(dir: &Path) -> valori_kernel::Kernel {
    let store = valori_node::store::Store::open(dir).expect("open store");
    let mut k = valori_kernel::Kernel::new();
    for e in store.entries_from(1) {
        let e = e.expect("entry");
        assert_eq!(e.seq, k.seq() + 1, "log has a gap");
        let ev = valori_kernel::Event::decode(&e.event).expect("entry decodes");
        k.apply(&ev).expect("entry applies");
        assert_eq!(k.chain_hash(), e.chain, "chain hash at {}", e.seq);
    }
    k
}

/// A follower of `leader` (by its flags).
pub fn follower(dir: &Path, leader: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--replication-mode", "follower", "--leader-url", leader];
    args.extend_from_slice(extra);
    Node::start(dir, &args)
}

/// Waits until a follower's `/readyz` reports a divergence whose message contains `at`;
/// returns its metrics.
pub fn wait_for_divergence(c: &Client, secs: u64, at: &str) -> String {
    wait_until(secs, "the divergence to be reported", || {
        c.get("/readyz").0 == 503
    });
    let (_, why) = c.get("/readyz");
    assert!(why["message"].as_str().unwrap().contains(at), "{why}");
    let (_, m) = c.get("/metrics");
    m.as_str().unwrap().to_string()
}

/// Base64, as the API carries bytes.
pub fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A deterministic vector for record `i`.
pub fn vector(i: u64, dim: usize) -> Vec<f64> {
    (0..dim)
        .map(|j| (((i * 31 + j as u64 * 17) % 97) as f64) / 8.0 - 6.0)
        .collect()
}

/// The files under `dir` (recursively) whose name satisfies `pred`.
pub fn files_under(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if pred(&p.file_name().unwrap().to_string_lossy()) {
                found.push(p);
            }
        }
    }
    found
}

/// A port that was free a moment ago (for a node that must come back on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `pred` holds, polling; panics with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP proxy between a follower and its leader that can cut and restore the link.
pub struct Proxy {
    pub url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn new(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let target = target.trim_start_matches("http://").to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                o.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { url, cut, open }
    }

    /// Drops every open connection and refuses new ones.
    pub fn partition(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The value of an unlabelled metric in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
