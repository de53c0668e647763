//! A cluster for the reconcile scenarios: the mocked API server, plus what a real cluster's
//! StatefulSet controller and kubelet would do with what the operator applied. Every pod is a
//! real `valori-node` process on 127.0.0.1 started with the pod's settings from the ConfigMap;
//! its claim is a directory that outlives the pod (as a PersistentVolumeClaim does); its Ready
//! condition is the node's `/readyz`, as the readiness probe in the template asks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use valori_operator::controller::{self, Context};
use valori_operator::crd::{ValoriCluster, ValoriClusterStatus};
use valori_operator::metrics::Metrics;

use super::apiserver::ApiServer;
use super::node::{http, Proc};

/// The namespace of every scenario.
pub const NS: &str = "agents";

/// The StorageClass a claim that names none gets (the cluster's default).
pub const DEFAULT_STORAGE_CLASS: &str = "standard";

/// The cluster.
pub struct Cluster {
    /// The mocked API server.
    pub api: ApiServer,
    /// The operator's context (its client talks to `api`).
    pub ctx: Arc<Context>,
    /// The `ValoriCluster`'s name.
    pub name: String,
    dir: tempfile::TempDir,
    procs: Mutex<BTreeMap<String, Proc>>,
    ports: Mutex<BTreeMap<String, u16>>,
    urls: Arc<Mutex<BTreeMap<String, String>>>,
    /// Pods whose node was killed and must stay down until `revive`.
    down: Mutex<BTreeSet<String>>,
    /// The API key the test's own requests present.
    key: Mutex<Option<String>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A cluster with the `ValoriCluster` `name` whose spec is `spec_yaml`.
    pub fn new(name: &str, spec_yaml: &str) -> Cluster {
        // The operator's logs, with RUST_LOG=valori_operator=debug.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (api, client) = ApiServer::start();
        let urls: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let u = urls.clone();
        let mut ctx = Context::new(
            client,
            Metrics::new(),
            kube::runtime::events::Reporter {
                controller: "valori-operator".into(),
                instance: Some("test".into()),
            },
        );
        // Pods are reached on their own ports here, as they are by DNS name in a cluster.
        ctx.urls = Arc::new(move |_, pod| {
            u.lock()
                .unwrap()
                .get(pod)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:9".into())
        });
        ctx.node_timeout = Duration::from_secs(3);
        ctx.switchover_timeout = Duration::from_secs(30);
        let c = Cluster {
            api,
            ctx: Arc::new(ctx),
            name: name.into(),
            dir: tempfile::tempdir().unwrap(),
            procs: Mutex::default(),
            ports: Mutex::default(),
            urls,
            down: Mutex::default(),
            key: Mutex::default(),
        };
        let spec: Value = serde_yaml::from_str(spec_yaml).unwrap();
        c.api.put(
            &c.vc_path(),
            json!({"apiVersion": "valori.dev/v1alpha1", "kind": "ValoriCluster",
                   "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        );
        c
    }

    /// Paths in the API server.
    pub fn vc_path(&self) -> String {
        format!(
            "/apis/valori.dev/v1alpha1/namespaces/{NS}/valoriclusters/{}",
            self.name
        )
    }
    /// The StatefulSet's path.
    pub fn sts_path(&self) -> String {
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{}", self.name)
    }
    /// A pod's path.
    pub fn pod_path(&self, pod: &str) -> String {
        format!("/api/v1/namespaces/{NS}/pods/{pod}")
    }
    /// A claim's path.
    pub fn claim_path(&self, pod: &str) -> String {
        format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/data-{pod}")
    }
    /// A Service's path.
    pub fn service_path(&self, suffix: &str) -> String {
        format!("/api/v1/namespaces/{NS}/services/{}-{suffix}", self.name)
    }
    /// Pod `ordinal`'s name.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.name)
    }
    /// A pod's claim directory.
    pub fn claim_dir(&self, pod: &str) -> PathBuf {
        self.dir.path().join(format!("data-{pod}"))
    }

    /// The resource as the API server holds it.
    pub fn vc(&self) -> ValoriCluster {
        serde_json::from_value(self.api.get(&self.vc_path()).unwrap()).unwrap()
    }

    /// Its status.
    pub fn status(&self) -> ValoriClusterStatus {
        self.vc().status.unwrap_or_default()
    }

    /// Changes the spec (a user's `kubectl apply` or `kubectl scale`).
    pub fn edit(&self, patch: Value) {
        self.api.patch(&self.vc_path(), json!({ "spec": patch }));
    }

    /// A pod's node URL.
    pub fn url(&self, pod: &str) -> String {
        self.urls.lock().unwrap()[pod].clone()
    }

    /// One reconcile pass, then the StatefulSet controller and kubelet catch up.
    pub async fn step(&self) -> Result<(), valori_operator::Error> {
        let r = controller::reconcile(Arc::new(self.vc()), self.ctx.clone()).await;
        // The kubelet's work is blocking (processes, probes): off the runtime's workers.
        tokio::task::block_in_place(|| self.sync());
        r.map(|_| ())
    }

    /// Steps until `done` holds of the status, for at most `secs` seconds.
    pub async fn until(&self, what: &str, secs: u64, done: impl Fn(&ValoriClusterStatus) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Err(e) = self.step().await {
                eprintln!("reconcile: {e}");
            }
            let st = self.status();
            if done(&st) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; status: {}",
                serde_json::to_string_pretty(&st).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn revision(template: &Value) -> String {
        let d = Sha256::digest(serde_json::to_vec(template).unwrap());
        d[..5].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What the StatefulSet controller and the kubelet do: create missing pods (and claims) from
    /// the current template, remove pods above the replica count, run each pod's node, and
    /// report readiness.
    pub fn sync(&self) {
        self.resize_claims();
        self.run_jobs();
        let Some(sts) = self.api.get(&self.sts_path()) else {
            return;
        };
        let rev = format!("{}-{}", self.name, Self::revision(&sts["spec"]["template"]));
        let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(0) as u32;
        let generation = sts["metadata"]["generation"].clone();
        self.api.patch(
            &self.sts_path(),
            json!({"status": {"updateRevision": rev, "replicas": replicas,
                              "observedGeneration": generation}}),
        );
        let config = self
            .api
            .get(&format!(
                "/api/v1/namespaces/{NS}/configmaps/{}-config",
                self.name
            ))
            .expect("the operator applies the ConfigMap before the StatefulSet");
        // The StatefulSet's pods (not a Job's): `<cluster>-<ordinal>`.
        let ordinal =
            |pod: &str| valori_operator::desired::ordinal(&self.name, pod).unwrap_or(u32::MAX);
        let sts_pods = || -> Vec<String> {
            self.api
                .list(&format!("/api/v1/namespaces/{NS}/pods"))
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .filter(|p| valori_operator::desired::ordinal(&self.name, p).is_some())
                .collect()
        };
        // Pods above the count go.
        for name in sts_pods() {
            if ordinal(&name) >= replicas {
                self.api.remove(&self.pod_path(&name));
            }
        }
        // Processes of pods that no longer exist stop (a deleted pod's containers).
        let existing: BTreeSet<String> = sts_pods().into_iter().collect();
        self.procs
            .lock()
            .unwrap()
            .retain(|name, _| existing.contains(name));
        for ord in 0..replicas {
            let pod = self.pod(ord);
            if !existing.contains(&pod) {
                self.create_pod(&pod, &rev, &sts, &config);
            } else if !self.procs.lock().unwrap().contains_key(&pod)
                && !self.down.lock().unwrap().contains(&pod)
            {
                // A container that could not start yet (its Secret was missing): retried.
                self.start_node(&pod, &config);
            }
        }
        // Readiness, as the probe on /readyz reports it.
        for pod in existing.iter().filter(|p| ordinal(p) < replicas) {
            let ready = self.procs.lock().unwrap().contains_key(pod)
                && http()
                    .get(format!("{}/readyz", self.url(pod)))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
            self.set_ready(pod, ready);
        }
    }

    /// What a storage driver does: a claim whose request exceeds its capacity is expanded,
    /// when its StorageClass allows it (a new claim is provisioned at its request).
    fn resize_claims(&self) {
        for claim in self
            .api
            .list(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"))
        {
            let want = claim["spec"]["resources"]["requests"]["storage"].clone();
            let has = &claim["status"]["capacity"]["storage"];
            if want.is_null() || *has == want {
                continue;
            }
            let class = claim["spec"]["storageClassName"]
                .as_str()
                .unwrap_or(DEFAULT_STORAGE_CLASS);
            let expands = self
                .api
                .get(&format!("/apis/storage.k8s.io/v1/storageclasses/{class}"))
                .is_some_and(|c| c["allowVolumeExpansion"] == json!(true));
            if has.is_null() || expands {
                let name = claim["metadata"]["name"].as_str().unwrap();
                self.api.patch(
                    &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}"),
                    json!({"status": {"phase": "Bound", "capacity": {"storage": want}}}),
                );
            }
        }
    }

    /// Cordons the Kubernetes node `pod` runs on (`kubectl cordon`, the first step of a drain).
    pub fn cordon(&self, pod: &str) {
        let node = format!("node-{pod}");
        self.api.put(
            &format!("/api/v1/nodes/{node}"),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
                   "spec": {"unschedulable": true}}),
        );
    }

    /// Adds a StorageClass (cluster-scoped), as an administrator would.
    pub fn storage_class(&self, name: &str, allow_expansion: bool) {
        self.api.put(
            &format!("/apis/storage.k8s.io/v1/storageclasses/{name}"),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": name}, "provisioner": "csi.example.com",
                   "allowVolumeExpansion": allow_expansion}),
        );
    }

    /// The restore Job's path.
    pub fn job_path(&self) -> String {
        format!("/apis/batch/v1/namespaces/{NS}/jobs/{}-restore", self.name)
    }

    /// What the Job controller and the kubelet do with a Job that has not run: run its one
    /// container (the real `valori-node` with the Job's arguments, its claim mounted as the
    /// claim's directory, its Secrets' keys as variables), then record its pod with the
    /// termination message (the report file, or with `FallbackToLogsOnError` the end of its
    /// log when it failed without one) and the Job's `Complete` or `Failed` condition.
    fn run_jobs(&self) {
        let Some(job) = self.api.get(&self.job_path()) else {
            return;
        };
        if job["status"]["conditions"].is_array() {
            return;
        }
        let pod_spec = &job["spec"]["template"]["spec"];
        let container = &pod_spec["containers"][0];
        let claim = pod_spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            self.api
                .get(&format!(
                    "/api/v1/namespaces/{NS}/persistentvolumeclaims/{claim}"
                ))
                .is_some(),
            "the Job's claim exists before the Job"
        );
        let data_dir = self.dir.path().join(&claim);
        std::fs::create_dir_all(&data_dir).unwrap();
        let report = self.dir.path().join(format!("{claim}.termination-log"));
        let _ = std::fs::remove_file(&report);
        let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
        let term = container["terminationMessagePath"].as_str().unwrap();
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                if a == mount {
                    data_dir.display().to_string()
                } else if a == term {
                    report.display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let mut env: Vec<(String, String)> = Vec::new();
        for from in container["envFrom"].as_array().into_iter().flatten() {
            let name = from["secretRef"]["name"].as_str().unwrap();
            let secret = self
                .api
                .get(&format!("/api/v1/namespaces/{NS}/secrets/{name}"))
                .expect("the Job's Secret exists");
            for (k, v) in secret["data"].as_object().unwrap() {
                let value = String::from_utf8(B64.decode(v.as_str().unwrap()).unwrap()).unwrap();
                env.push((k.clone(), value));
            }
        }
        let out = std::process::Command::new(super::node::node_binary())
            .args(&args)
            .envs(env)
            .env("VALORI_LOG", "warn")
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let mut message = std::fs::read_to_string(&report).unwrap_or_default();
        if message.is_empty() && code != 0 {
            message = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        let job_name = job["metadata"]["name"].as_str().unwrap();
        let pod = format!("{job_name}-x7k2p");
        self.api.put(
            &format!("/api/v1/namespaces/{NS}/pods/{pod}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod, "namespace": NS,
                                "labels": {"job-name": job_name}},
                   "spec": pod_spec.clone(),
                   "status": {"phase": if code == 0 { "Succeeded" } else { "Failed" },
                              "containerStatuses": [{"name": "restore", "ready": false,
                                  "restartCount": 0, "image": "", "imageID": "",
                                  "state": {"terminated": {"exitCode": code,
                                                           "message": message}}}]}}),
        );
        let condition = if code == 0 { "Complete" } else { "Failed" };
        self.api.patch(
            &self.job_path(),
            json!({"status": {"conditions": [{"type": condition, "status": "True"}],
                              "succeeded": i32::from(code == 0), "failed": i32::from(code != 0)}}),
        );
    }

    fn set_ready(&self, pod: &str, ready: bool) {
        let s = if ready { "True" } else { "False" };
        self.api.patch(
            &self.pod_path(pod),
            json!({"status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": s}]}}),
        );
    }

    fn create_pod(&self, pod: &str, rev: &str, sts: &Value, config: &Value) {
        // A claim that was deleted is a new, empty volume.
        let dir = self.claim_dir(pod);
        if self.api.get(&self.claim_path(pod)).is_none() {
            let _ = std::fs::remove_dir_all(&dir);
            // From the claim template; the default StorageClass when it names none.
            let template = &sts["spec"]["volumeClaimTemplates"][0];
            let mut spec = template["spec"].clone();
            if spec["storageClassName"].is_null() {
                spec["storageClassName"] = json!(DEFAULT_STORAGE_CLASS);
            }
            let size = spec["resources"]["requests"]["storage"].clone();
            self.api.put(
                &self.claim_path(pod),
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": format!("data-{pod}"), "namespace": NS,
                                    "labels": template["metadata"]["labels"].clone()},
                       "spec": spec,
                       "status": {"phase": "Bound", "capacity": {"storage": size}}}),
            );
        }
        let mut labels = sts["spec"]["template"]["metadata"]["labels"].clone();
        labels["statefulset.kubernetes.io/pod-name"] = json!(pod);
        labels["controller-revision-hash"] = json!(rev);
        // Scheduled on a Kubernetes node of its own.
        let mut spec = sts["spec"]["template"]["spec"].clone();
        spec["nodeName"] = json!(format!("node-{pod}"));
        self.api.put(
            &self.pod_path(pod),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod, "namespace": NS, "labels": labels},
                   "spec": spec,
                   "status": {"podIP": "127.0.0.1",
                              "conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        if !self.down.lock().unwrap().contains(pod) {
            self.start_node(pod, config);
        }
    }

    fn start_node(&self, pod: &str, config: &Value) {
        let port = *self
            .ports
            .lock()
            .unwrap()
            .entry(pod.to_string())
            .or_insert_with(free_port);
        let mut env: Vec<(String, String)> = config["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "VALORI_HTTP_PORT"
                        | "VALORI_GRPC_PORT"
                        | "VALORI_HEALTH_PORT"
                        | "VALORI_DATA_DIR"
                )
            })
            .collect();
        // The read-write Service's name resolves to the pod it selects.
        let rw = self
            .api
            .get(&self.service_path("rw"))
            .and_then(|s| {
                s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]
                    .as_str()
                    .map(str::to_string)
            })
            .and_then(|p| self.urls.lock().unwrap().get(&p).cloned())
            .unwrap_or_else(|| "http://127.0.0.1:9".into());
        for (k, v) in &mut env {
            if k == "VALORI_LEADER_URL" {
                *v = rw.clone();
            }
        }
        env.push(("VALORI_FOLLOWER_NAME".into(), pod.into()));
        // Keys from the auth Secret, as the template's secretKeyRefs ask.
        let sts = self.api.get(&self.sts_path()).unwrap();
        for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
        {
            let r = &e["valueFrom"]["secretKeyRef"];
            if r.is_object() {
                // Without its Secret a container does not start (the kubelet retries).
                let Some(secret) = self.api.get(&format!(
                    "/api/v1/namespaces/{NS}/secrets/{}",
                    r["name"].as_str().unwrap()
                )) else {
                    return;
                };
                let b64 = secret["data"][r["key"].as_str().unwrap()].as_str().unwrap();
                let value = String::from_utf8(B64.decode(b64).unwrap()).unwrap();
                env.push((e["name"].as_str().unwrap().to_string(), value));
            }
        }
        let proc = Proc::start_on(&self.claim_dir(pod), port, &[], &env);
        self.urls
            .lock()
            .unwrap()
            .insert(pod.to_string(), proc.url.clone());
        self.procs.lock().unwrap().insert(pod.to_string(), proc);
    }

    /// Kills a pod's node (SIGKILL) and keeps it down: its pod stays, unready.
    pub fn kill(&self, pod: &str) {
        tokio::task::block_in_place(|| self.kill_blocking(pod))
    }

    fn kill_blocking(&self, pod: &str) {
        self.down.lock().unwrap().insert(pod.to_string());
        if let Some(mut p) = self.procs.lock().unwrap().remove(pod) {
            p.kill();
        }
        self.set_ready(pod, false);
    }

    /// Starts a killed pod's node again on the same claim.
    pub fn revive(&self, pod: &str) {
        tokio::task::block_in_place(|| self.revive_blocking(pod))
    }

    fn revive_blocking(&self, pod: &str) {
        self.down.lock().unwrap().remove(pod);
        let config = self
            .api
            .get(&format!(
                "/api/v1/namespaces/{NS}/configmaps/{}-config",
                self.name
            ))
            .unwrap();
        self.start_node(pod, &config);
    }

    /// Asserts that every request the operator made is allowed by the chart's RBAC rules.
    pub fn assert_permitted(&self) {
        use valori_operator::rbac::{allows, CLUSTER_RULES};
        for call in self.api.calls() {
            for (g, r, v) in call.permissions() {
                assert!(
                    allows(CLUSTER_RULES, &g, &r, &v),
                    "{} {} needs {v} on {g}/{r}, which the operator's ClusterRole lacks",
                    call.method,
                    call.path
                );
            }
        }
    }

    fn authed(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &*self.key.lock().unwrap() {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Adds a Secret holding the cluster's API key (as a user would before creating the
    /// cluster); the test's own requests present it from then on.
    pub fn secret(&self, name: &str, key: &str, value: &str) {
        *self.key.lock().unwrap() = Some(value.to_string());
        let b64 = B64.encode(value);
        self.api.put(
            &format!("/api/v1/namespaces/{NS}/secrets/{name}"),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": NS}, "data": {key: b64}}),
        );
    }

    /// Pod names the operator deleted, in order.
    pub fn deleted_pods(&self) -> Vec<String> {
        self.api
            .calls()
            .iter()
            .filter(|c| c.method == "DELETE" && c.path.contains("/pods/"))
            .map(|c| c.path.rsplit('/').next().unwrap().to_string())
            .collect()
    }

    /// Events the operator posted: (reason, note).
    pub fn events(&self) -> Vec<(String, String)> {
        self.api
            .list(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"))
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["note"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// A node's role as it reports it.
    pub fn role(&self, pod: &str) -> Value {
        tokio::task::block_in_place(|| self.role_blocking(pod))
    }

    fn role_blocking(&self, pod: &str) -> Value {
        self.authed(http().get(format!("{}/v1/role", self.url(pod))))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Writes `n` records through the leader (creating collection `v` first when needed) and
    /// returns their ids.
    pub fn write(&self, leader: &str, from: u64, n: u64) -> Vec<u64> {
        tokio::task::block_in_place(|| self.write_blocking(leader, from, n))
    }

    fn write_blocking(&self, leader: &str, from: u64, n: u64) -> Vec<u64> {
        let url = self.url(leader);
        let c = http();
        let _ = self
            .authed(c.post(format!("{url}/v1/collections")))
            .json(&json!({"name": "v", "dimension": 4}))
            .send();
        (from..from + n)
            .map(|i| {
                let r: Value = self
                    .authed(c.post(format!("{url}/v1/collections/v/records")))
                    .json(&json!({"vector": super::node::vector(i)}))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                r["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("write refused: {r}"))
            })
            .collect()
    }

    /// Every node's (seq, chain hash).
    pub fn states(&self) -> BTreeMap<String, (u64, String)> {
        tokio::task::block_in_place(|| self.states_blocking())
    }

    fn states_blocking(&self) -> BTreeMap<String, (u64, String)> {
        let urls = self.urls.lock().unwrap().clone();
        let procs: BTreeSet<String> = self.procs.lock().unwrap().keys().cloned().collect();
        urls.into_iter()
            .filter(|(p, _)| procs.contains(p))
            .map(|(p, u)| {
                let s: Value = self
                    .authed(http().get(format!("{u}/v1/state")))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                (
                    p,
                    (
                        s["seq"].as_u64().unwrap(),
                        s["chain_hash"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }
}
