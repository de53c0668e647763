//! The reference README's replication recipe, run as written. A test binary of its own: it
//! needs the documented fixed ports (3000, 3001, and gRPC 50051, 50052, which lie in the
//! ephemeral port range), and here no other test's nodes or clients can be holding them while
//! it runs.

mod common;

use common::{vector, wait_until, Client};
use serde_json::json;

/// A node process, killed when the test ends, passed or not.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The reference README's recipe, verbatim: a leader with no settings and, in the same
/// directory, a follower with only `VALORI_REPLICATION_MODE`, `VALORI_LEADER_URL` and
/// `VALORI_HTTP_PORT=3001`. Both start (their own gRPC ports and data directories) and the
/// follower replicates. Uses the documented ports 3000 and 3001.
#[test]
fn the_replication_recipe_works_as_written() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // A connection of an earlier test may have closed from the ephemeral port 50052 a moment
    // ago: the port is not free to listen on until its TIME-WAIT ends (up to 60 s).
    wait_until(90, "the documented ports to be free", || {
        [3000, 3001, 50051, 50052]
            .iter()
            .all(|&p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok())
    });
    let dir = tempfile::tempdir().unwrap();
    let start = |env: &[(&str, &str)]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_valori-node"))
            .current_dir(dir.path())
            .env_clear()
            .env("VALORI_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines.any(|l| l.unwrap().starts_with("valori-node listening on "));
        if !started {
            let _ = child.kill();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the node did not start: {err}");
        }
        std::thread::spawn(move || for _ in lines {});
        Stopped(child)
    };
    let _leader = start(&[]);
    let _follower = start(&[
        ("VALORI_REPLICATION_MODE", "follower"),
        ("VALORI_LEADER_URL", "http://localhost:3000"),
        ("VALORI_HTTP_PORT", "3001"),
    ]);
    let lc = Client::new("http://127.0.0.1:3000");
    let fc = Client::new("http://127.0.0.1:3001");
    lc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    for i in 0..5 {
        lc.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
    }
    wait_until(30, "the follower to catch up", || fc.state().0 == 6);
    assert_eq!(fc.state(), lc.state());
    assert!(dir.path().join("valori_data").is_dir());
    assert!(dir.path().join("valori_data_3001").is_dir());
}
