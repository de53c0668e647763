//! The `ValoriCluster` resource (group `valori.dev`, version `v1alpha1`, short name `vc`): what a
//! platform team asks for, and the status the operator reports. The CRD in `crds/` is printed
//! from these types by the `crdgen` binary; a test fails when the committed YAML drifts.
//!
//! Validation that the apiserver enforces is part of the schema: ranges from schemars
//! attributes, and CEL rules (`x-kubernetes-validations`) for what spans fields or versions:
//! more synchronous replicas than followers, a storage size that shrinks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A Valori cluster: one leader and `instances - 1` followers, cross-checked and failed over
/// by the operator.
// Each printer column repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "valori.dev",
    version = "v1alpha1",
    kind = "ValoriCluster",
    namespaced,
    shortname = "vc",
    status = "ValoriClusterStatus",
    doc = "A Valori cluster: a leader and followers that replicate it, cross-checked by their hashes and failed over by the operator",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 52").message("a ValoriCluster's name is at most 52 characters: its pods' revision labels and Services append to it"),
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.instances",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.instances"),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances"
    ),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.currentLeader"),
    printcolumn(
        name = "Converged",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Converged\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    cel,
    validation = kube::core::Rule::new(
        "!has(self.replication) || self.replication.synchronousReplicas < self.instances"
    )
    .message("synchronousReplicas must be below instances: a synchronous write needs that many followers besides the leader"),
    validation = kube::core::Rule::new(
        "!has(self.replication) || !has(self.replication.minReplicasToWrite) || self.replication.minReplicasToWrite < self.instances"
    )
    .message("minReplicasToWrite must be below instances: the leader would refuse every write"),
    validation = kube::core::Rule::new(
        "has(self.auth) || !has(self.serviceType) || self.serviceType == 'ClusterIP'"
    )
    .message("a NodePort or LoadBalancer Service needs auth: without API keys anyone who reaches it may write, change roles and restore")
)]
#[serde(rename_all = "camelCase")]
pub struct ValoriClusterSpec {
    /// Pods in the cluster: one leader and `instances - 1` followers.
    #[schemars(range(min = 1, max = 64))]
    pub instances: u32,
    /// The valori-node image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Each pod's data volume.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of each pod. Without them the pods request 500m CPU and 1Gi of memory,
    /// limited to 2Gi: size the memory at about 1.3 times the state's bytes plus the largest
    /// batch (README, "Sizing").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// API keys, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Synchronous replication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationSpec>,
    /// Snapshots.
    #[serde(default)]
    pub snapshots: SnapshotSpec,
    /// Cross-checking the pods' hashes.
    #[serde(default)]
    pub cross_check: CrossCheckSpec,
    /// Failover and leader updates.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// The type of the read-write, read-only and any-instance Services.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Where pods may run. Without affinity, pods prefer different nodes.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// Serve HTTP and gRPC over TLS with a certificate from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Backups to object storage: the leader uploads snapshots and ships its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Labels and annotations every object of the cluster carries, its pods included (for
    /// cost allocation, policy engines, service meshes).
    #[serde(default, skip_serializing_if = "InheritedMetadata::is_empty")]
    pub inherited_metadata: InheritedMetadata,
    /// Annotations of the read-write, read-only and any-instance Services (an internal load
    /// balancer, for example).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_annotations: BTreeMap<String, String>,
    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The pods' PriorityClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Extra environment variables of the node container (proxies, `TZ`, ...). The node's own
    /// `VALORI_*` settings come from the spec's fields and cannot be given here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = kube::core::Rule::new("self.all(e, !e.name.startsWith('VALORI_'))").message("VALORI_* settings come from the spec's fields, not env"))]
    pub env: Vec<EnvVar>,
    /// The nodes' log level.
    #[serde(default)]
    pub log_level: LogLevel,
    /// Keep the full-precision vectors in memory-mapped files on the data volume instead of
    /// in memory (`--vectors-on-disk`): the pods then need memory for the walk copy, the
    /// graph and the rest, while the vectors' pages are cache the kernel reclaims under the
    /// limit. Results are the same; reranks read the disk for pages not in memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vectors_on_disk: bool,
    /// The kubelet's probes of the nodes (on a port of their own, outside the connection
    /// limit).
    #[serde(default)]
    pub probes: ProbesSpec,
    /// Who may reach the nodes: a NetworkPolicy the operator keeps (on by default).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// How a new cluster starts: empty, or restored from a backup. Read once, when the
    /// cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("bootstrap is read when the cluster is created and cannot change"))]
    pub bootstrap: Option<BootstrapSpec>,
}

fn default_image() -> String {
    "valori-node:0.1.0".into()
}

/// The cluster's NetworkPolicy. The pods then accept connections only from each other, from the
/// operator, from pods of their namespace, and from `from`; the probe and metrics port from
/// anywhere.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Leave the pods open to every network peer (no NetworkPolicy).
    #[serde(default)]
    pub disabled: bool,
    /// More clients allowed to the API ports (other namespaces, IP blocks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
}

/// The probes: a start-up allowance (a node replays its log before it serves, which can take
/// long on a large log), then liveness and readiness.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProbesSpec {
    /// How long a node may take to start serving before it is restarted (default an hour).
    #[schemars(range(min = 10, max = 604800))]
    pub startup_seconds: u32,
    /// Liveness: whether the node process answers.
    pub liveness: ProbeSettings,
    /// Readiness: the node's own verdict (a diverged or bootstrapping follower is not ready).
    pub readiness: ProbeSettings,
}

impl Default for ProbesSpec {
    fn default() -> Self {
        ProbesSpec {
            startup_seconds: 3600,
            liveness: ProbeSettings {
                period_seconds: 10,
                failure_threshold: 6,
                timeout_seconds: 2,
            },
            readiness: ProbeSettings {
                period_seconds: 5,
                failure_threshold: 3,
                timeout_seconds: 2,
            },
        }
    }
}

/// One probe's timing.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSettings {
    /// Seconds between probes.
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: u32,
    /// Consecutive failures that count.
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Seconds a probe may take.
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
}

/// Labels and annotations the cluster's objects inherit.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InheritedMetadata {
    /// Labels (the operator's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl InheritedMetadata {
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// How much the nodes log.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// As `VALORI_LOG` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Every start.
    Always,
    /// When the node lacks it.
    IfNotPresent,
    /// Never.
    Never,
}

/// A pod's data volume (a PersistentVolumeClaim per pod).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = kube::core::Rule::new(
        "has(self.storageClass) == has(oldSelf.storageClass) && (!has(self.storageClass) || self.storageClass == oldSelf.storageClass)"
    )
    .message("storageClass cannot change: the claims keep the class they were made with")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size, as a Kubernetes quantity (`10Gi`). It may grow, never shrink: the operator grows
    /// the claims when their StorageClass allows volume expansion (`StorageResized` says how
    /// far it has come, or why not).
    #[x_kube(validation = kube::core::Rule::new("quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage size may grow but never shrink"))]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// StorageClass (the cluster's default when absent). Fixed once the cluster exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: "10Gi".into(),
            storage_class: None,
        }
    }
}

/// API keys: a Secret holding the read-write key and, optionally, a read-only one.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The Secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Its key holding the read-write API key.
    #[serde(default = "default_write_key")]
    #[schemars(length(min = 1, max = 253))]
    pub write_key: String,
    /// Its key holding the read-only API key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub read_key: Option<String>,
}

fn default_write_key() -> String {
    "api-key".into()
}

/// Synchronous replication (`--sync-replicas`, `--sync-timeout-ms`).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Followers that must hold a write before it is acknowledged (0: asynchronous).
    #[serde(default)]
    pub synchronous_replicas: u32,
    /// How long a synchronous write waits before it is answered `replication_timeout`.
    #[serde(default = "default_sync_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    /// The leader refuses writes (503 `not_enough_replicas`, retryable) while fewer followers
    /// than this confirmed within `minReplicasMaxLagSeconds` (`--min-replicas-to-write`), so
    /// that a leader cut off from its followers stops acknowledging what a failover would
    /// lose. Default: 1 with asynchronous replication and at least one follower, else 0 (a
    /// synchronous write already waits for its followers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas_to_write: Option<u32>,
    /// How recently a follower must have confirmed to count (default 10).
    #[serde(default = "default_min_replicas_max_lag_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub min_replicas_max_lag_seconds: u32,
}

fn default_min_replicas_max_lag_seconds() -> u32 {
    10
}

/// `--min-replicas-to-write` and its lag for a cluster: as the spec says, or by default 1 with
/// asynchronous replication and at least one follower (an isolated leader then acknowledges
/// at most the lag's worth of writes a failover loses), else 0.
pub fn min_replicas(spec: &ValoriClusterSpec) -> (u32, u32) {
    let r = spec.replication;
    let sync = r.map_or(0, |r| r.synchronous_replicas);
    let lag = r.map_or_else(default_min_replicas_max_lag_seconds, |r| {
        r.min_replicas_max_lag_seconds
    });
    let default = u32::from(sync == 0 && spec.instances > 1);
    (
        r.and_then(|r| r.min_replicas_to_write).unwrap_or(default),
        lag,
    )
}

fn default_sync_timeout_ms() -> u64 {
    5000
}

/// Snapshots (`--snapshot-every`, `--snapshot-keep`).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// Take a snapshot every this many events (0: only on request).
    pub every: u64,
    /// Snapshots to keep.
    #[schemars(range(min = 1))]
    pub keep: u32,
}

impl Default for SnapshotSpec {
    fn default() -> Self {
        SnapshotSpec {
            every: 100_000,
            keep: 2,
        }
    }
}

/// Cross-checking: every interval the operator compares the pods' chain hashes at a common
/// sequence number.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrossCheckSpec {
    /// Seconds between checks.
    #[schemars(range(min = 1))]
    pub interval_seconds: u32,
    /// Re-bootstrap a diverged follower from the leader.
    pub heal: bool,
}

impl Default for CrossCheckSpec {
    fn default() -> Self {
        CrossCheckSpec {
            interval_seconds: 30,
            heal: true,
        }
    }
}

/// Failover and leader updates.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Seconds the leader must stay unready before the operator fails over.
    #[schemars(range(min = 1, max = 3600))]
    pub delay_seconds: u32,
    /// How the leader's pod is updated when the template changes.
    pub leader_update: LeaderUpdate,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec {
            delay_seconds: 30,
            leader_update: LeaderUpdate::Switchover,
        }
    }
}

/// How the leader's pod is updated.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderUpdate {
    /// Promote the most advanced follower, demote the old leader, then restart it.
    Switchover,
    /// Restart the leader in place (writes pause meanwhile).
    Restart,
}

/// The Services' type.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ServiceType {
    /// Inside the cluster.
    #[default]
    ClusterIP,
    /// On every node's port.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

/// Where pods may run.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity; when absent, pods prefer nodes (by hostname) without another of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// TLS from a Secret of type `kubernetes.io/tls`.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// The Secret holding `tls.crt` and `tls.key`, and optionally `ca.crt`: the CA that signed
    /// them, which the operator then trusts when it calls the nodes (as cert-manager writes it).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Backups to object storage (the nodes' `--backup-*` flags): the leader uploads the snapshots
/// it takes and ships its log every `shipIntervalSeconds`, so a restore can reach any sequence
/// number shipped.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Where: `s3://bucket/prefix` (S3 and S3-compatible stores), `gs://bucket/prefix` or
    /// `az://container/prefix`. Give each cluster a prefix of its own: a node never writes into
    /// a prefix that holds another history.
    #[schemars(regex(pattern = r"^(s3|s3a|gs|az|azure|abfs|abfss|file)://[^?#]+$"))]
    pub destination: String,
    /// A Secret whose keys the nodes receive as environment variables: the store's settings and
    /// credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
    /// `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_KEY`, ...). Without one, the pods'
    /// workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Seconds between log-shipping rounds: how far the backup may be behind (0: snapshots only).
    #[serde(default = "default_ship_interval_seconds")]
    #[schemars(range(max = 86400))]
    pub ship_interval_seconds: u32,
    /// Upload every snapshot the nodes take (`snapshots.every`).
    #[serde(default = "default_true")]
    pub upload_snapshots: bool,
    /// Also take a snapshot backup on this schedule: a five-field cron expression in UTC
    /// (`0 3 * * *`: every day at 03:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 200))]
    pub schedule: Option<String>,
    /// How many backed-up snapshots to keep and for how long.
    #[serde(default)]
    pub retention: BackupRetention,
}

fn default_ship_interval_seconds() -> u32 {
    10
}

fn default_true() -> bool {
    true
}

/// Retention of backed-up snapshots; once one goes, so do the log segments before the oldest
/// kept.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRetention {
    /// Snapshots to keep.
    #[schemars(range(min = 1, max = 10000))]
    pub count: u32,
    /// Remove snapshots older than this (`30d`, `12h`, `90m`); the newest is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*(s|m|h|d)$"))]
    pub max_age: Option<String>,
}

impl Default for BackupRetention {
    fn default() -> Self {
        BackupRetention {
            count: 7,
            max_age: None,
        }
    }
}

/// How a new cluster starts.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Restore (or clone) the cluster from a backup: before any pod starts, a Job restores the
    /// first pod's volume; that pod becomes the leader only once its node serves exactly the
    /// restored sequence number, and the followers bootstrap from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// A backup to restore from, and how far.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = kube::core::Rule::new("!has(self.targetSeq) || !has(self.targetTime)")
        .message("give targetSeq or targetTime, not both")
)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// The backup (another cluster's `spec.backup.destination`): `s3://bucket/prefix`,
    /// `gs://...`, `az://...`.
    #[schemars(regex(pattern = r"^(s3|s3a|gs|az|azure|abfs|abfss|file)://[^?#]+$"))]
    pub destination: String,
    /// A Secret whose keys the restore receives as environment variables (as
    /// `spec.backup.credentialsSecret`). Without one, the workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Restore exactly this sequence number (default: the newest the backup holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_seq: Option<u64>,
    /// Restore the newest sequence number the backup held at this time, RFC 3339 in UTC
    /// (`2026-12-07T03:00:00Z`): what had been shipped by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"
    ))]
    pub target_time: Option<String>,
}

/// The restore of a cluster bootstrapped from a backup.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// `Restoring`, `Restored` or `Failed`.
    pub phase: String,
    /// The backup.
    pub destination: String,
    /// The sequence number restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The chain hash at `seq`, verified event by event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_hash: Option<String>,
    /// The state hash at `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<String>,
    /// The snapshot it started from (0: the first event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_seq: Option<u64>,
    /// Events replayed from the shipped log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An on-demand backup of a ValoriCluster: its leader uploads a snapshot to the cluster's
/// `spec.backup.destination` now.
// Each printer column repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "valori.dev",
    version = "v1alpha1",
    kind = "ValoriBackup",
    namespaced,
    shortname = "vb",
    status = "ValoriBackupStatus",
    doc = "An on-demand backup of a ValoriCluster: its leader uploads a snapshot to the cluster's backup destination",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Seq", type_ = "integer", json_path = ".status.seq"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    cel,
    validation = kube::core::Rule::new("self == oldSelf").message("a ValoriBackup's spec cannot change")
)]
#[serde(rename_all = "camelCase")]
pub struct ValoriBackupSpec {
    /// The ValoriCluster in this namespace to back up; it must have `spec.backup`.
    #[schemars(length(min = 1, max = 52))]
    pub cluster: String,
}

/// What became of an on-demand backup.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ValoriBackupStatus {
    /// `Pending` (waiting for the cluster or its leader), `Running`, `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why it waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The destination it went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The pod that took it (the leader then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The sequence number the snapshot captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The chain hash at `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_hash: Option<String>,
    /// The state hash at `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<String>,
    /// The snapshot's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// When the operator asked for it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When its upload finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

/// Backups as the leader last reported them.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The sequence number of the newest snapshot in the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_seq: Option<u64>,
    /// When its upload finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
    /// Its state hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_state_hash: Option<String>,
    /// Snapshots in the destination.
    #[serde(default)]
    pub backups: u32,
    /// The highest sequence number a restore can reach.
    #[serde(default)]
    pub reaches: u64,
    /// The sequence number up to which the leader has shipped its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_through: Option<u64>,
    /// Events the leader has not shipped yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_lag_events: Option<u64>,
    /// When the schedule last asked for a backup (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<String>,
    /// Why backing up fails, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ValoriClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that exist.
    #[serde(default)]
    pub instances: u32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_instances: u32,
    /// The label selector of the pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Creating`, `Healthy`, `Upgrading`, `FailingOver`, `Degraded`, `Diverged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the cluster is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_reason: Option<String>,
    /// The pod that leads now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_leader: Option<String>,
    /// When it became the leader (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_leader_since: Option<String>,
    /// The pod the operator is making the leader (differs from `currentLeader` during a
    /// failover or switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_leader: Option<String>,
    /// When it was chosen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_leader_since: Option<String>,
    /// The epoch of the current leader's assignment.
    #[serde(default)]
    pub epoch: u64,
    /// Whether the cluster is fenced (`valori.dev/fence`): its leader takes no write.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// Since when the leader has been unready or unreachable (RFC 3339); the operator fails
    /// over once `spec.failover.delaySeconds` have passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_unready_since: Option<String>,
    /// The pod template revision being rolled out (the StatefulSet's update revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Pods that run it.
    #[serde(default)]
    pub updated_instances: u32,
    /// When the pods were last cross-checked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cross_check: Option<String>,
    /// The sequence number they were compared at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cross_check_seq: Option<u64>,
    /// One entry per pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances_status: Vec<InstanceStatus>,
    /// Backups, when `spec.backup` asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The restore of a cluster bootstrapped from a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// `Ready`, `Progressing`, `Converged`, `Diverged`, `Degraded`, `BackedUp` with backups and
    /// `Restored` when bootstrapped from one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One pod as the operator last saw it.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The pod.
    pub pod: String,
    /// `leader` or `follower`, as the node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether the node answers ready.
    pub ready: bool,
    /// Its sequence number.
    #[serde(default)]
    pub seq: u64,
    /// Its chain hash at `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_hash: Option<String>,
    /// Its state hash at the last cross-check (at its own sequence number then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<String>,
    /// Events behind the leader.
    #[serde(default)]
    pub lag: u64,
    /// Whether its chain hash agreed with the leader's at the last cross-check.
    pub converged: bool,
    /// Whether it runs the StatefulSet's current template.
    #[serde(default)]
    pub updated: bool,
}
