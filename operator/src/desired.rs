//! What a `ValoriCluster` asks Kubernetes for: pure functions from the resource (and the
//! leader the operator chose) to the objects it applies. Nothing here talks to anything.
//!
//! The shape: **one StatefulSet** whose pods are all alike. Which pod leads is not in the pod
//! template but in the nodes themselves (their role API, with epochs) and in a label the
//! operator keeps on each pod. A promoted follower therefore stays where it is: failover
//! changes a role and a Service's selector, never a StatefulSet, and never restarts a pod. The
//! StatefulSet's update strategy is `OnDelete`, so the operator decides the order in which pods
//! take a new template (followers first, the leader last).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretEnvSource, SecretKeySelector, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{ServiceType, ValoriCluster};

/// The key of the cluster-key Secret that holds it.
pub const CLUSTER_KEY: &str = "api-key";
/// The pod template's annotation: a hash of the Secrets the pods read, so that a rotated key,
/// certificate or credential rolls the pods.
pub const SECRETS_HASH_ANNOTATION: &str = "valori.dev/secrets-hash";
/// Where the pods mount the TLS Secret.
pub const TLS_DIR: &str = "/tls";

/// The cluster's annotation that stops every pod and keeps the claims (`"true"`); removing it
/// (or any other value) starts them again.
pub const HIBERNATE_ANNOTATION: &str = "valori.dev/hibernate";
/// The cluster's annotation asking for a switchover to the pod it names; the operator removes
/// it once done (or refused).
pub const SWITCHOVER_ANNOTATION: &str = "valori.dev/switchover-to";

/// The cluster's annotation that fences it (`"true"`): the leader stops taking writes, every
/// pod keeps serving reads; removing it gives the same leader writes again at a new epoch.
pub const FENCE_ANNOTATION: &str = "valori.dev/fence";

/// Whether the cluster is asked to be fenced.
pub fn fence_asked(vc: &ValoriCluster) -> bool {
    vc.annotations()
        .get(FENCE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Whether the cluster is asked to hibernate.
pub fn hibernating(vc: &ValoriCluster) -> bool {
    vc.annotations()
        .get(HIBERNATE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The label naming the application.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label naming the cluster (the `ValoriCluster`'s name).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The label naming who manages the objects.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label the operator keeps on each pod: `leader` or `follower`, as its node reports it.
pub const ROLE_LABEL: &str = "valori.dev/role";
/// The label the StatefulSet controller puts on each pod with its name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label the StatefulSet controller puts on each pod with its template's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod template annotation holding a hash of the configuration, so that a configuration
/// change is a template change and rolls out.
pub const CONFIG_HASH_ANNOTATION: &str = "valori.dev/config-hash";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "valori-operator";
/// The node's HTTP port in the pods.
pub const HTTP_PORT: i32 = 3000;
/// The node's gRPC port in the pods.
pub const GRPC_PORT: i32 = 50051;
/// The nodes' probe port (`--health-port`: the probes and metrics, plain HTTP).
pub const HEALTH_PORT: i32 = 8081;
/// Where the data volume is mounted.
pub const DATA_DIR: &str = "/data";
/// The user the node runs as (the image's own non-root user).
pub const RUN_AS_USER: i64 = 10001;

/// The names of what a cluster owns.
pub struct Names {
    /// The StatefulSet, the PodDisruptionBudget, and the prefix of the pods.
    pub cluster: String,
}

impl Names {
    /// The names of `vc`'s objects.
    pub fn of(vc: &ValoriCluster) -> Names {
        Names {
            cluster: vc.name_any(),
        }
    }
    /// The read-write Service (the leader).
    pub fn rw(&self) -> String {
        format!("{}-rw", self.cluster)
    }
    /// The read-only Service (the followers).
    pub fn ro(&self) -> String {
        format!("{}-ro", self.cluster)
    }
    /// The Service of every instance.
    pub fn any(&self) -> String {
        format!("{}-any", self.cluster)
    }
    /// The headless Service giving each pod a stable DNS name.
    pub fn headless(&self) -> String {
        format!("{}-nodes", self.cluster)
    }
    /// The leader's disruption budget.
    pub fn leader_budget(&self) -> String {
        format!("{}-leader", self.cluster)
    }
    /// The ConfigMap of the nodes' settings.
    pub fn config(&self) -> String {
        format!("{}-config", self.cluster)
    }
    /// Pod `ordinal`.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }
    /// The Secret holding the cluster's own key (created by the operator).
    pub fn cluster_key(&self) -> String {
        format!("{}-cluster-key", self.cluster)
    }
    /// The Job that restores the first pod's claim from a backup.
    pub fn restore_job(&self) -> String {
        format!("{}-restore", self.cluster)
    }
    /// Pod `pod`'s data claim (the StatefulSet's claim template is named `data`).
    pub fn claim(&self, pod: &str) -> String {
        format!("data-{pod}")
    }
}

/// The labels of everything a cluster owns, and the selector of its pods.
pub fn labels(vc: &ValoriCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), "valori".to_string()),
        (INSTANCE_LABEL.to_string(), vc.name_any()),
        (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
    ])
}

/// The pods' selector as a string (`status.selector`, for the scale subresource and lists).
pub fn selector_string(vc: &ValoriCluster) -> String {
    labels(vc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ordinal of a StatefulSet pod named `<cluster>-<n>`.
pub fn ordinal(cluster: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(cluster)?.strip_prefix('-')?.parse().ok()
}

fn meta(vc: &ValoriCluster, name: String) -> ObjectMeta {
    let annotations = &vc.spec.inherited_metadata.annotations;
    ObjectMeta {
        name: Some(name),
        namespace: vc.namespace(),
        labels: Some(object_labels(vc)),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        owner_references: owner(vc).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The labels of an object (and of the pods): the inherited ones, then the cluster's own,
/// which win on a clash (they are the selector).
fn object_labels(vc: &ValoriCluster) -> BTreeMap<String, String> {
    let mut l = vc.spec.inherited_metadata.labels.clone();
    l.extend(labels(vc));
    l
}

/// The resources of a pod whose spec names none: a modest preset (README, "Sizing").
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.into());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), q("500m")),
            ("memory".into(), q("1Gi")),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), q("2Gi"))])),
        ..ResourceRequirements::default()
    }
}

/// The pods' affinity: the spec's, with the cluster's preference for one pod per node added
/// to its pod anti-affinity (never replacing the user's rules).
pub fn affinity(vc: &ValoriCluster) -> Affinity {
    let Some(mut a) = vc.spec.scheduling.affinity.clone() else {
        return default_affinity(vc);
    };
    let ours = default_affinity(vc)
        .pod_anti_affinity
        .and_then(|p| p.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    a.pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .extend(ours);
    a
}

/// The pods' spread: the spec's constraints, or by default as evenly as possible over zones
/// (a preference: a single-zone cluster still schedules).
pub fn topology_spread(vc: &ValoriCluster) -> Vec<TopologySpreadConstraint> {
    let given = &vc.spec.scheduling.topology_spread_constraints;
    if !given.is_empty() {
        return given.clone();
    }
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(labels(vc)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

fn owner(vc: &ValoriCluster) -> Option<OwnerReference> {
    vc.controller_owner_ref(&())
}

/// The nodes' settings, as `VALORI_*` environment variables. Every pod starts as a follower
/// of the read-write Service; the operator gives roles through the role API afterwards, so a
/// pod's role never depends on its template.
pub fn config_map(vc: &ValoriCluster) -> ConfigMap {
    let names = Names::of(vc);
    let spec = &vc.spec;
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let (sync, timeout) = spec
        .replication
        .map(|r| (r.synchronous_replicas, r.timeout_ms))
        .unwrap_or((0, 5000));
    let (min_replicas, min_lag_s) = crate::crd::min_replicas(spec);
    let mut data = BTreeMap::from([
        ("VALORI_HTTP_PORT".into(), HTTP_PORT.to_string()),
        ("VALORI_GRPC_PORT".into(), GRPC_PORT.to_string()),
        ("VALORI_HEALTH_PORT".into(), HEALTH_PORT.to_string()),
        ("VALORI_DATA_DIR".into(), DATA_DIR.into()),
        ("VALORI_REPLICATION_MODE".into(), "follower".into()),
        (
            "VALORI_LEADER_URL".into(),
            format!("{scheme}://{}:{HTTP_PORT}", names.rw()),
        ),
        ("VALORI_SYNC_REPLICAS".into(), sync.to_string()),
        ("VALORI_SYNC_TIMEOUT_MS".into(), timeout.to_string()),
        (
            "VALORI_MIN_REPLICAS_TO_WRITE".into(),
            min_replicas.to_string(),
        ),
        (
            "VALORI_MIN_REPLICAS_MAX_LAG_MS".into(),
            (u64::from(min_lag_s) * 1000).to_string(),
        ),
        (
            "VALORI_SNAPSHOT_EVERY".into(),
            spec.snapshots.every.to_string(),
        ),
        (
            "VALORI_SNAPSHOT_KEEP".into(),
            spec.snapshots.keep.to_string(),
        ),
        ("VALORI_LOG".into(), spec.log_level.as_str().into()),
    ]);
    if spec.vectors_on_disk {
        // Only when asked: a cluster without it keeps the ConfigMap (and its pods) it had.
        data.insert("VALORI_VECTORS_ON_DISK".into(), "true".into());
    }
    if let Some(b) = &spec.backup {
        data.extend([
            ("VALORI_BACKUP_TO".into(), b.destination.clone()),
            (
                "VALORI_BACKUP_SHIP_INTERVAL_S".into(),
                b.ship_interval_seconds.to_string(),
            ),
            (
                "VALORI_BACKUP_SNAPSHOTS".into(),
                b.upload_snapshots.to_string(),
            ),
            (
                "VALORI_BACKUP_RETAIN_COUNT".into(),
                b.retention.count.to_string(),
            ),
        ]);
        if let Some(age) = &b.retention.max_age {
            data.insert("VALORI_BACKUP_RETAIN_AGE".into(), age.clone());
        }
    }
    ConfigMap {
        metadata: meta(vc, names.config()),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// A short, stable hash of the configuration (the pod template's annotation).
pub fn config_hash(cm: &ConfigMap) -> String {
    let bytes = serde_json::to_vec(&cm.data).expect("a ConfigMap's data serializes");
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A probe of `path` on the health port (plain HTTP, outside the connection limit, whether or
/// not the API serves TLS).
fn probe(path: &str, period: u32, failures: u32, timeout: u32) -> Probe {
    let i = |n: u32| Some(i32::try_from(n).unwrap_or(i32::MAX));
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("health".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: i(period),
        failure_threshold: i(failures),
        timeout_seconds: i(timeout),
        ..Probe::default()
    }
}

/// The start-up probe: `/healthz` every 10 seconds for up to `spec.probes.startupSeconds`
/// (liveness starts only once it passed, so a long recovery is not killed).
fn startup_probe(vc: &ValoriCluster) -> Probe {
    let p = vc.spec.probes;
    probe(
        "/healthz",
        STARTUP_PERIOD_SECONDS,
        p.startup_seconds.div_ceil(STARTUP_PERIOD_SECONDS),
        p.liveness.timeout_seconds,
    )
}

/// Seconds between start-up probes.
const STARTUP_PERIOD_SECONDS: u32 = 10;

/// The default affinity: pods prefer nodes (by hostname) that run no other pod of the cluster.
pub fn default_affinity(vc: &ValoriCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(labels(vc)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The StatefulSet's replica count: `spec.instances`, except while the leader the status names
/// has an ordinal the scale-down removes: the leadership moves first (a switchover), and only
/// then do its pods go, so a scale-down never removes a leader.
pub fn replicas(vc: &ValoriCluster) -> u32 {
    if hibernating(vc) {
        return 0;
    }
    let names = Names::of(vc);
    let leader = vc
        .status
        .as_ref()
        .and_then(|s| s.current_leader.as_deref())
        .and_then(|l| ordinal(&names.cluster, l));
    match leader {
        Some(o) if o >= vc.spec.instances => o + 1,
        _ => vc.spec.instances,
    }
}

pub fn stateful_set(vc: &ValoriCluster) -> StatefulSet {
    let names = Names::of(vc);
    let spec = &vc.spec;
    let mut env = vec![EnvVar {
        // Each follower names itself to its leader by its pod's name.
        name: "VALORI_FOLLOWER_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    if let Some(auth) = &spec.auth {
        env.push(secret_env(
            "VALORI_API_KEY",
            &auth.secret_name,
            &auth.write_key,
        ));
        // The cluster's own key (a Secret the operator creates): followers present it to
        // their leader, the operator to every node; the users' keys rotate freely beside it.
        env.push(secret_env(
            "VALORI_CLUSTER_API_KEY",
            &names.cluster_key(),
            CLUSTER_KEY,
        ));
        if let Some(read) = &auth.read_key {
            env.push(secret_env("VALORI_READ_API_KEY", &auth.secret_name, read));
        }
    }
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    }];
    let mut volumes = Vec::new();
    if let Some(t) = &spec.tls {
        env.push(EnvVar {
            name: "VALORI_TLS_CERT".into(),
            value: Some(format!("{TLS_DIR}/tls.crt")),
            ..EnvVar::default()
        });
        env.push(EnvVar {
            name: "VALORI_TLS_KEY".into(),
            value: Some(format!("{TLS_DIR}/tls.key")),
            ..EnvVar::default()
        });
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(t.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: names.config(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    // The backup store's credentials and settings, every key of the Secret as a variable.
    if let Some(secret) = spec
        .backup
        .as_ref()
        .and_then(|b| b.credentials_secret.clone())
    {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret,
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    let container = Container {
        name: "valori-node".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(pull_policy(vc)),
        env_from: Some(env_from),
        env: Some(env.into_iter().chain(spec.env.iter().cloned()).collect()),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("health".into()),
                container_port: HEALTH_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        // Liveness is the process answering; readiness is the node's own verdict (a diverged
        // or still bootstrapping follower is not ready). Neither waits on the kernel.
        startup_probe: Some(startup_probe(vc)),
        liveness_probe: Some(probe(
            "/healthz",
            spec.probes.liveness.period_seconds,
            spec.probes.liveness.failure_threshold,
            spec.probes.liveness.timeout_seconds,
        )),
        readiness_probe: Some(probe(
            "/readyz",
            spec.probes.readiness.period_seconds,
            spec.probes.readiness.failure_threshold,
            spec.probes.readiness.timeout_seconds,
        )),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let sched = &spec.scheduling;
    let pod = PodSpec {
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        node_selector: (!sched.node_selector.is_empty()).then(|| sched.node_selector.clone()),
        tolerations: (!sched.tolerations.is_empty()).then(|| sched.tolerations.clone()),
        affinity: Some(affinity(vc)),
        topology_spread_constraints: Some(topology_spread(vc)),
        security_context: Some(pod_security_context()),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        priority_class_name: spec.priority_class_name.clone(),
        // The nodes never call the Kubernetes API.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(vc)),
            ..ObjectMeta::default()
        },
        spec: Some(claim_spec(vc)),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: meta(vc, names.cluster.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas(vc) as i32),
            service_name: Some(names.headless()),
            selector: LabelSelector {
                match_labels: Some(labels(vc)),
                ..LabelSelector::default()
            },
            // The pods start together; the operator, not the StatefulSet, orders roles.
            pod_management_policy: Some("Parallel".into()),
            // The operator deletes pods in its own order to roll out a new template.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(object_labels(vc)),
                    annotations: Some({
                        let mut a = spec.inherited_metadata.annotations.clone();
                        a.insert(CONFIG_HASH_ANNOTATION.into(), config_hash(&config_map(vc)));
                        a
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Each pod's data claim: the StatefulSet's claim template, and the first pod's claim that a
/// restore fills before the StatefulSet exists.
fn claim_spec(vc: &ValoriCluster) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: vc.spec.storage.storage_class.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".into(),
                Quantity(vc.spec.storage.size.clone()),
            )])),
            ..VolumeResourceRequirements::default()
        }),
        ..PersistentVolumeClaimSpec::default()
    }
}

fn pull_policy(vc: &ValoriCluster) -> String {
    vc.spec
        .image_pull_policy
        .map_or_else(|| "IfNotPresent".into(), |p| format!("{p:?}"))
}

/// The nodes' (and the restore's) container: no privileges, a read-only root.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The pods' user, group and seccomp profile.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        // Ownership is fixed once, not walked over every file at each start.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The Secret holding the cluster's own key `key` (the operator creates it once, with a random
/// key, and it goes with the cluster).
pub fn cluster_key_secret(vc: &ValoriCluster, key: &str) -> Secret {
    Secret {
        metadata: meta(vc, Names::of(vc).cluster_key()),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(CLUSTER_KEY.into(), key.into())])),
        ..Secret::default()
    }
}

/// What the pods' Secrets hold, as far as the pod template depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretsSeen {
    /// A digest of every Secret the pods read (keys, certificate, backup credentials).
    pub hash: String,
    /// Whether the TLS Secret holds `ca.crt` (followers then trust it for their leader).
    pub tls_ca: bool,
}

/// The StatefulSet's pod template as the Secrets make it: their digest as an annotation (a
/// rotation rolls the pods), and the TLS Secret's CA trusted by followers when it has one.
pub fn with_secrets(sts: &mut StatefulSet, seen: &SecretsSeen) {
    let Some(template) = sts.spec.as_mut().map(|s| &mut s.template) else {
        return;
    };
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SECRETS_HASH_ANNOTATION.into(), seen.hash.clone());
    if seen.tls_ca {
        if let Some(c) = template
            .spec
            .as_mut()
            .and_then(|p| p.containers.first_mut())
        {
            c.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: "VALORI_LEADER_CA_FILE".into(),
                value: Some(format!("{TLS_DIR}/ca.crt")),
                ..EnvVar::default()
            });
        }
    }
}

/// A short digest of Secrets' contents: each Secret's name and its keys and values, in order.
pub fn secrets_hash<'a>(
    secrets: impl IntoIterator<Item = (&'a str, Option<&'a Secret>)>,
) -> String {
    let mut h = Sha256::new();
    for (name, secret) in secrets {
        h.update(name.as_bytes());
        h.update([0]);
        match secret.and_then(|s| s.data.as_ref()) {
            None => h.update(b"absent\0"),
            Some(data) => {
                for (k, v) in data {
                    h.update(k.as_bytes());
                    h.update([0]);
                    h.update((v.0.len() as u64).to_le_bytes());
                    h.update(&v.0);
                }
            }
        }
        h.update([0xff]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first pod's claim (`data-<cluster>-0`), created before the StatefulSet when the
/// cluster is restored from a backup: the StatefulSet adopts it by its name. Not owned by the
/// cluster, as the StatefulSet's claims are not.
pub fn restore_claim(vc: &ValoriCluster) -> PersistentVolumeClaim {
    let names = Names::of(vc);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names.claim(&names.pod(0))),
            namespace: vc.namespace(),
            labels: Some(labels(vc)),
            ..ObjectMeta::default()
        },
        spec: Some(claim_spec(vc)),
        ..PersistentVolumeClaim::default()
    }
}

/// The label of the restore Job's pod (it carries the cluster's name and application labels,
/// not the managed-by label, so that neither the StatefulSet nor the operator's pod lists
/// select it).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Where the restore writes its one-line JSON report, which Kubernetes keeps as the
/// container's termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The Job that restores `spec.bootstrap.fromBackup` into the first pod's claim
/// (`valori-node restore`), or `None` without one. Its report is the container's termination
/// message. A failed attempt leaves the claim empty, so Kubernetes may retry it.
pub fn restore_job(vc: &ValoriCluster) -> Option<Job> {
    let from = vc.spec.bootstrap.as_ref()?.from_backup.as_ref()?;
    let names = Names::of(vc);
    let mut args = vec![
        "restore".to_string(),
        "--from".into(),
        from.destination.clone(),
        "--data-dir".into(),
        DATA_DIR.into(),
        "--report".into(),
        TERMINATION_LOG.into(),
    ];
    if let Some(n) = from.target_seq {
        args.extend(["--target-seq".into(), n.to_string()]);
    }
    if let Some(t) = &from.target_time {
        args.extend(["--target-time".into(), t.clone()]);
    }
    let env_from = from.credentials_secret.as_ref().map(|secret| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]
    });
    let mut pod_labels = labels(vc);
    pod_labels.remove(MANAGED_BY_LABEL);
    pod_labels.insert(COMPONENT_LABEL.into(), "restore".into());
    let sched = &vc.spec.scheduling;
    Some(Job {
        metadata: meta(vc, names.restore_job()),
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "restore".into(),
                        image: Some(vc.spec.image.clone()),
                        image_pull_policy: Some(pull_policy(vc)),
                        args: Some(args),
                        env: Some(vec![EnvVar {
                            name: "VALORI_LOG".into(),
                            value: Some("info".into()),
                            ..EnvVar::default()
                        }]),
                        env_from,
                        resources: vc.spec.resources.clone(),
                        security_context: Some(container_security_context()),
                        termination_message_path: Some(TERMINATION_LOG.into()),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "data".into(),
                            mount_path: DATA_DIR.into(),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: names.claim(&names.pod(0)),
                            read_only: Some(false),
                        }),
                        ..Volume::default()
                    }]),
                    node_selector: (!sched.node_selector.is_empty())
                        .then(|| sched.node_selector.clone()),
                    tolerations: (!sched.tolerations.is_empty()).then(|| sched.tolerations.clone()),
                    security_context: Some(pod_security_context()),
                    image_pull_secrets: (!vc.spec.image_pull_secrets.is_empty())
                        .then(|| vc.spec.image_pull_secrets.clone()),
                    priority_class_name: vc.spec.priority_class_name.clone(),
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

fn service(
    vc: &ValoriCluster,
    name: String,
    selector: BTreeMap<String, String>,
    headless: bool,
) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let type_ = match vc.spec.service_type {
        _ if headless => "ClusterIP",
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut metadata = meta(vc, name);
    // The client-facing Services carry the spec's annotations (an internal load balancer).
    if !headless && !vc.spec.service_annotations.is_empty() {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(vc.spec.service_annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: headless.then(|| "None".into()),
            // Pods must find each other by name before they are ready (a follower bootstraps
            // from its leader before it is ready itself).
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(selector),
            ports: Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The read-write Service: it selects the leader's pod by name, so that moving it is one
/// change of one object, and a former leader whose label is stale is never selected.
pub fn rw_service(vc: &ValoriCluster, leader: &str) -> Service {
    let mut selector = labels(vc);
    selector.insert(POD_NAME_LABEL.into(), leader.into());
    service(vc, Names::of(vc).rw(), selector, false)
}

/// The read-only Service: the followers, by the role label the operator keeps.
pub fn ro_service(vc: &ValoriCluster) -> Service {
    let mut selector = labels(vc);
    selector.insert(ROLE_LABEL.into(), "follower".into());
    service(vc, Names::of(vc).ro(), selector, false)
}

/// The Service of every ready instance (reads).
pub fn any_service(vc: &ValoriCluster) -> Service {
    service(vc, Names::of(vc).any(), labels(vc), false)
}

/// The headless Service that gives each pod a stable DNS name.
pub fn headless_service(vc: &ValoriCluster) -> Service {
    service(vc, Names::of(vc).headless(), labels(vc), true)
}

/// The PodDisruptionBudget: at most one pod of the cluster down by eviction at a time.
pub fn pod_disruption_budget(vc: &ValoriCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(vc, Names::of(vc).cluster),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels(vc)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The cluster's NetworkPolicy, `None` when `spec.networkPolicy.disabled`: the API ports
/// (HTTP, gRPC) admit the cluster's own pods (replication), the operator's pods in any
/// namespace (`app.kubernetes.io/name: valori-operator`), the pods of the cluster's namespace
/// and the spec's `from` peers; the health port (probes, metrics) admits everyone.
pub fn network_policy(vc: &ValoriCluster) -> Option<NetworkPolicy> {
    let np = &vc.spec.network_policy;
    if np.disabled {
        return None;
    }
    let pods = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let mut from = vec![
        NetworkPolicyPeer {
            pod_selector: Some(pods(labels(vc))),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(pods(BTreeMap::from([(
                NAME_LABEL.into(),
                OPERATOR_NAME.into(),
            )]))),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        },
    ];
    from.extend(np.from.iter().cloned());
    Some(NetworkPolicy {
        metadata: meta(vc, Names::of(vc).cluster),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods(labels(vc))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: Some(vec![port(HTTP_PORT), port(GRPC_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port(HEALTH_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// The operator's pods' `app.kubernetes.io/name` (the chart's name).
pub const OPERATOR_NAME: &str = "valori-operator";

/// The leader's own disruption budget (`NAME-leader`, selecting the pod labelled leader): with
/// followers, no eviction of the leader is allowed, so a drain waits while the operator, seeing
/// the leader's node cordoned, hands the leadership to a follower; the label moves and the old
/// leader is then evicted as a follower. With one instance nothing can take over: the budget
/// allows the eviction and says that the cluster is down until the pod is back.
pub fn leader_disruption_budget(vc: &ValoriCluster) -> PodDisruptionBudget {
    let mut selector = labels(vc);
    selector.insert(ROLE_LABEL.into(), "leader".into());
    let alone = vc.spec.instances < 2;
    let mut metadata = meta(vc, Names::of(vc).leader_budget());
    metadata.annotations.get_or_insert_with(BTreeMap::new).insert(
        "valori.dev/disruption".into(),
        if alone {
            "one instance: a drain evicts the only pod and the cluster serves nothing until it runs again elsewhere".into()
        } else {
            "the leader is never evicted: when its node is cordoned the operator switches the leadership to a follower first".into()
        },
    );
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(i32::from(alone))),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The URL of pod `pod` through the headless Service (what followers are pointed at).
pub fn pod_url(vc: &ValoriCluster, pod: &str) -> String {
    let scheme = if vc.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let ns = vc.namespace().unwrap_or_else(|| "default".into());
    format!(
        "{scheme}://{pod}.{}.{ns}.svc:{HTTP_PORT}",
        Names::of(vc).headless()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AuthSpec, TlsSpec, ValoriClusterSpec};

    fn vc(yaml: &str) -> ValoriCluster {
        let spec: ValoriClusterSpec = serde_yaml::from_str(yaml).unwrap();
        let mut vc = ValoriCluster::new("memory", spec);
        vc.metadata.namespace = Some("agents".into());
        vc.metadata.uid = Some("uid-1".into());
        vc
    }

    fn container(sts: &StatefulSet) -> &Container {
        &sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.as_ref().unwrap().iter().find(|e| e.name == name)
    }

    #[test]
    fn everything_is_owned_labelled_and_in_the_namespace() {
        let v = vc("instances: 3");
        let metas = [
            config_map(&v).metadata,
            stateful_set(&v).metadata,
            rw_service(&v, "memory-0").metadata,
            ro_service(&v).metadata,
            any_service(&v).metadata,
            headless_service(&v).metadata,
            pod_disruption_budget(&v).metadata,
        ];
        let mut names = Vec::new();
        for m in &metas {
            assert_eq!(m.namespace.as_deref(), Some("agents"));
            let o = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
                ("ValoriCluster", "memory", "uid-1")
            );
            assert_eq!(o.controller, Some(true));
            assert_eq!(m.labels.as_ref().unwrap(), &labels(&v));
            names.push(m.name.clone().unwrap());
        }
        assert_eq!(
            names,
            [
                "memory-config",
                "memory",
                "memory-rw",
                "memory-ro",
                "memory-any",
                "memory-nodes",
                "memory"
            ]
        );
        assert_eq!(
            selector_string(&v),
            "app.kubernetes.io/instance=memory,app.kubernetes.io/managed-by=valori-operator,app.kubernetes.io/name=valori"
        );
    }

    #[test]
    fn the_stateful_set_follows_the_spec() {
        let v = vc(r#"
instances: 3
image: registry.local/valori-node:9
imagePullPolicy: Always
storage: {size: 20Gi, storageClass: fast}
resources: {requests: {cpu: "1", memory: 2Gi}}
"#);
        let sts = stateful_set(&v);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("memory-nodes"));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let c = container(&sts);
        assert_eq!(c.image.as_deref(), Some("registry.local/valori-node:9"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["memory"],
            Quantity("2Gi".into())
        );
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let cs = claim.spec.as_ref().unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("20Gi".into())
        );
        // No auth, no TLS: no key variables, no TLS volume, plain HTTP probes.
        assert!(env(c, "VALORI_API_KEY").is_none());
        assert!(sts
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .is_none());
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        assert_eq!(probe.scheme.as_deref(), Some("HTTP"));
        // Hardened: non-root, read-only root, no capabilities, the runtime's seccomp profile.
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let psc = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let psc = psc.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
    }

    #[test]
    fn keys_and_tls_come_from_secrets() {
        let mut v = vc("instances: 2");
        v.spec.auth = Some(AuthSpec {
            secret_name: "keys".into(),
            write_key: "rw".into(),
            read_key: Some("ro".into()),
        });
        v.spec.tls = Some(TlsSpec {
            secret_name: "certs".into(),
        });
        let sts = stateful_set(&v);
        let c = container(&sts);
        for (var, key) in [
            ("VALORI_API_KEY", ("keys", "rw")),
            ("VALORI_READ_API_KEY", ("keys", "ro")),
            (
                "VALORI_CLUSTER_API_KEY",
                ("memory-cluster-key", CLUSTER_KEY),
            ),
        ] {
            let r = env(c, var)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|f| f.secret_key_ref.as_ref())
                .unwrap_or_else(|| panic!("{var} from the Secret"));
            assert_eq!((r.name.as_str(), r.key.as_str()), key);
        }
        assert!(env(c, "VALORI_LEADER_API_KEY").is_none());
        // No key is ever written into the pod template or the ConfigMap in the clear.
        let cm = config_map(&v);
        assert!(!serde_json::to_string(&cm).unwrap().contains("keys"));
        assert_eq!(
            env(c, "VALORI_TLS_CERT").unwrap().value.as_deref(),
            Some("/tls/tls.crt")
        );
        let probe = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        // Probes go to the plain health port, whatever the API serves.
        assert_eq!(probe.scheme.as_deref(), Some("HTTP"));
        assert_eq!(probe.port, IntOrString::String("health".into()));
        assert_eq!(
            cm.data.as_ref().unwrap()["VALORI_LEADER_URL"],
            "https://memory-rw:3000"
        );
        assert_eq!(
            pod_url(&v, "memory-1"),
            "https://memory-1.memory-nodes.agents.svc:3000"
        );
    }

    #[test]
    fn backups_reach_the_nodes_as_flags_and_their_credentials_from_a_secret() {
        let none = vc("instances: 3");
        let d = config_map(&none).data.unwrap();
        assert!(d.keys().all(|k| !k.starts_with("VALORI_BACKUP")), "{d:?}");
        assert_eq!(
            container(&stateful_set(&none))
                .env_from
                .as_ref()
                .unwrap()
                .len(),
            1
        );

        let v = vc(r#"
instances: 3
backup:
  destination: s3://backups/memory
  credentialsSecret: backup-creds
  shipIntervalSeconds: 30
  uploadSnapshots: false
  retention: {count: 14, maxAge: 30d}
"#);
        let d = config_map(&v).data.unwrap();
        assert_eq!(d["VALORI_BACKUP_TO"], "s3://backups/memory");
        assert_eq!(d["VALORI_BACKUP_SHIP_INTERVAL_S"], "30");
        assert_eq!(d["VALORI_BACKUP_SNAPSHOTS"], "false");
        assert_eq!(d["VALORI_BACKUP_RETAIN_COUNT"], "14");
        assert_eq!(d["VALORI_BACKUP_RETAIN_AGE"], "30d");
        let sts = stateful_set(&v);
        let from = container(&sts).env_from.as_ref().unwrap();
        assert_eq!(from.len(), 2);
        let secret = from[1].secret_ref.as_ref().unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.optional),
            ("backup-creds", Some(false))
        );
        // Defaults: every 10 s, snapshots uploaded, 7 kept, no age limit, no Secret.
        let d = config_map(&vc("instances: 1\nbackup: {destination: gs://b/p}"))
            .data
            .unwrap();
        assert_eq!(d["VALORI_BACKUP_SHIP_INTERVAL_S"], "10");
        assert_eq!(d["VALORI_BACKUP_SNAPSHOTS"], "true");
        assert_eq!(d["VALORI_BACKUP_RETAIN_COUNT"], "7");
        assert!(!d.contains_key("VALORI_BACKUP_RETAIN_AGE"));
    }

    #[test]
    fn the_config_map_carries_the_replication_and_snapshot_policy() {
        let v = vc(r#"
instances: 3
replication: {synchronousReplicas: 1, timeoutMs: 900}
snapshots: {every: 5000, keep: 4}
"#);
        let cm = config_map(&v);
        let d = cm.data.as_ref().unwrap();
        assert_eq!(d["VALORI_SYNC_REPLICAS"], "1");
        assert_eq!(d["VALORI_SYNC_TIMEOUT_MS"], "900");
        // Synchronous: no minimum by default (a synchronous write waits for its followers).
        assert_eq!(d["VALORI_MIN_REPLICAS_TO_WRITE"], "0");
        assert_eq!(d["VALORI_SNAPSHOT_EVERY"], "5000");
        assert_eq!(d["VALORI_SNAPSHOT_KEEP"], "4");
        // Vectors in memory unless asked, and then in files.
        assert!(!d.contains_key("VALORI_VECTORS_ON_DISK"));
        let on_disk = config_map(&vc("instances: 1\nvectorsOnDisk: true\n"));
        assert_eq!(on_disk.data.unwrap()["VALORI_VECTORS_ON_DISK"], "true");
        // Every pod starts as a follower; roles come from the role API.
        assert_eq!(d["VALORI_REPLICATION_MODE"], "follower");
        assert_eq!(d["VALORI_LEADER_URL"], "http://memory-rw:3000");
        assert_eq!(d["VALORI_DATA_DIR"], DATA_DIR);
    }

    #[test]
    fn a_configuration_change_changes_the_template_and_nothing_else_does() {
        let a = vc("instances: 3");
        let mut b = a.clone();
        b.spec.snapshots.every = 7;
        let tpl = |v: &ValoriCluster| stateful_set(v).spec.unwrap().template;
        assert_ne!(tpl(&a), tpl(&b));
        // Scaling or cross-check and failover settings are not the pods' business.
        let mut c = a.clone();
        c.spec.instances = 5;
        c.spec.cross_check.interval_seconds = 5;
        c.spec.failover.delay_seconds = 1;
        assert_eq!(tpl(&a), tpl(&c));
        // And the same resource gives the same bytes.
        assert_eq!(
            serde_json::to_vec(&stateful_set(&a)).unwrap(),
            serde_json::to_vec(&stateful_set(&a.clone())).unwrap()
        );
    }

    #[test]
    fn services_select_the_right_pods() {
        let v = vc("instances: 3\nserviceType: LoadBalancer");
        let rw = rw_service(&v, "memory-2").spec.unwrap();
        assert_eq!(rw.selector.as_ref().unwrap()[POD_NAME_LABEL], "memory-2");
        assert_eq!(rw.type_.as_deref(), Some("LoadBalancer"));
        let ro = ro_service(&v).spec.unwrap();
        assert_eq!(ro.selector.as_ref().unwrap()[ROLE_LABEL], "follower");
        let any = any_service(&v).spec.unwrap();
        assert_eq!(any.selector.as_ref().unwrap(), &labels(&v));
        let h = headless_service(&v).spec.unwrap();
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        assert_eq!(h.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(h.publish_not_ready_addresses, Some(true));
        for s in [&rw, &ro, &any, &h] {
            let ports: Vec<_> = s.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
            assert_eq!(ports, [HTTP_PORT, GRPC_PORT]);
        }
    }

    #[test]
    fn pods_spread_by_default_and_the_user_can_say_otherwise() {
        let v = vc("instances: 3");
        let sts = stateful_set(&v);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let terms = pod
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        // The default spread: over zones, as a preference.
        let spread = pod.topology_spread_constraints.unwrap();
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
        // The user's affinity keeps its rules, and the cluster's preference is added to them.
        let v = vc(r#"
instances: 3
scheduling:
  nodeSelector: {disk: ssd}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [db]}]}]
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 50
        podAffinityTerm: {topologyKey: rack, labelSelector: {matchLabels: {app: other}}}
  topologySpreadConstraints:
  - {maxSkew: 2, topologyKey: rack, whenUnsatisfiable: DoNotSchedule}
  tolerations: [{key: dedicated, operator: Equal, value: valori, effect: NoSchedule}]
"#);
        let pod = stateful_set(&v).spec.unwrap().template.spec.unwrap();
        let a = pod.affinity.unwrap();
        assert!(a.node_affinity.is_some(), "the user's node affinity stays");
        let terms = a
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            terms
                .iter()
                .map(|t| t.pod_affinity_term.topology_key.as_str())
                .collect::<Vec<_>>(),
            ["rack", "kubernetes.io/hostname"]
        );
        let spread = pod.topology_spread_constraints.unwrap();
        assert_eq!(
            (spread.len(), spread[0].max_skew),
            (1, 2),
            "the user's spread replaces ours"
        );
        assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
    }

    #[test]
    fn settings_policies_require_reach_the_pods_and_services() {
        let plain = stateful_set(&vc("instances: 1")).spec.unwrap().template;
        let pod = plain.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.security_context
                .unwrap()
                .fs_group_change_policy
                .as_deref(),
            Some("OnRootMismatch")
        );
        assert_eq!(pod.containers[0].resources, Some(default_resources()));
        assert!(pod.image_pull_secrets.is_none() && pod.priority_class_name.is_none());
        let v = vc(r#"
instances: 2
inheritedMetadata:
  labels: {team: search, app.kubernetes.io/name: impostor}
  annotations: {cost-center: "42"}
serviceAnnotations: {networking.gke.io/load-balancer-type: Internal}
imagePullSecrets: [{name: registry}]
priorityClassName: databases
env: [{name: HTTPS_PROXY, value: "http://proxy:3128"}]
logLevel: debug
resources: {requests: {cpu: "2", memory: 8Gi}}
"#);
        let sts = stateful_set(&v);
        assert_eq!(sts.metadata.labels.as_ref().unwrap()["team"], "search");
        let tpl = sts.spec.as_ref().unwrap().template.clone();
        let meta = tpl.metadata.unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "search");
        assert_eq!(labels[NAME_LABEL], "valori", "the cluster's labels win");
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["cost-center"], "42");
        assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
        assert_eq!(
            sts.spec.as_ref().unwrap().selector.match_labels,
            Some(super::labels(&v)),
            "the selector is the cluster's labels alone"
        );
        let pod = tpl.spec.unwrap();
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(pod.priority_class_name.as_deref(), Some("databases"));
        let c = &pod.containers[0];
        assert_eq!(
            env(c, "HTTPS_PROXY").unwrap().value.as_deref(),
            Some("http://proxy:3128")
        );
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["memory"],
            Quantity("8Gi".into())
        );
        assert_eq!(config_map(&v).data.unwrap()["VALORI_LOG"], "debug");
        let rw = rw_service(&v, "memory-0");
        let a = rw.metadata.annotations.unwrap();
        assert_eq!(a["networking.gke.io/load-balancer-type"], "Internal");
        assert_eq!(a["cost-center"], "42");
        let headless = headless_service(&v).metadata.annotations.unwrap();
        assert!(!headless.contains_key("networking.gke.io/load-balancer-type"));
        let job_pod = restore_job(&vc(r#"
instances: 1
imagePullSecrets: [{name: registry}]
bootstrap: {fromBackup: {destination: "s3://b/p"}}
"#))
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
        assert_eq!(job_pod.image_pull_secrets.unwrap()[0].name, "registry");
    }

    #[test]
    fn the_budget_allows_one_pod_down() {
        let p = pod_disruption_budget(&vc("instances: 3")).spec.unwrap();
        assert_eq!(p.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(ordinal("memory", "memory-12"), Some(12));
        assert_eq!(ordinal("memory", "memory-x"), None);
        assert_eq!(ordinal("memory", "memoryx-1"), None);
    }

    #[test]
    fn the_statefulset_keeps_the_leader_s_ordinal_until_the_leadership_moved() {
        let mut c = vc("instances: 2");
        assert_eq!(replicas(&c), 2);
        c.status = Some(crate::crd::ValoriClusterStatus {
            current_leader: Some("memory-3".into()),
            ..Default::default()
        });
        assert_eq!(replicas(&c), 4, "memory-3 leads");
        assert_eq!(stateful_set(&c).spec.unwrap().replicas, Some(4));
        c.status.as_mut().unwrap().current_leader = Some("memory-1".into());
        assert_eq!(replicas(&c), 2);
    }

    #[test]
    fn an_asynchronous_cluster_bounds_what_an_isolated_leader_acknowledges_by_default() {
        let d = |yaml: &str| config_map(&vc(yaml)).data.unwrap();
        let three = d("instances: 3");
        assert_eq!(three["VALORI_MIN_REPLICAS_TO_WRITE"], "1");
        assert_eq!(three["VALORI_MIN_REPLICAS_MAX_LAG_MS"], "10000");
        // One pod has no follower to wait for.
        assert_eq!(d("instances: 1")["VALORI_MIN_REPLICAS_TO_WRITE"], "0");
        let set =
            d("instances: 3\nreplication: {minReplicasToWrite: 2, minReplicasMaxLagSeconds: 4}");
        assert_eq!(set["VALORI_MIN_REPLICAS_TO_WRITE"], "2");
        assert_eq!(set["VALORI_MIN_REPLICAS_MAX_LAG_MS"], "4000");
        let off = d("instances: 3\nreplication: {minReplicasToWrite: 0}");
        assert_eq!(off["VALORI_MIN_REPLICAS_TO_WRITE"], "0");
    }

    #[test]
    fn a_restore_job_fills_the_first_claim_and_its_pod_is_no_cluster_pod() {
        assert!(restore_job(&vc("instances: 3")).is_none());
        let c = vc(r#"
instances: 3
storage: {size: 20Gi, storageClass: fast}
bootstrap:
  fromBackup: {destination: "s3://b/memory", credentialsSecret: creds, targetTime: "2026-12-07T03:00:00Z"}
"#);
        let claim = restore_claim(&c);
        assert_eq!(claim.metadata.name.as_deref(), Some("data-memory-0"));
        // The claim the StatefulSet's template would make for pod 0, so that it adopts it.
        let sts = stateful_set(&c);
        let template = &sts
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap()[0];
        assert_eq!(claim.spec, template.spec);
        assert!(claim.metadata.owner_references.is_none());
        let job = restore_job(&c).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("memory-restore"));
        assert!(job.metadata.owner_references.is_some());
        let spec = job.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(
            !labels.contains_key(MANAGED_BY_LABEL),
            "the cluster's selector must not select the Job's pod"
        );
        assert_eq!(labels[COMPONENT_LABEL], "restore");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let ctr = &pod.containers[0];
        assert_eq!(
            ctr.args.clone().unwrap(),
            [
                "restore",
                "--from",
                "s3://b/memory",
                "--data-dir",
                DATA_DIR,
                "--report",
                TERMINATION_LOG,
                "--target-time",
                "2026-12-07T03:00:00Z"
            ]
        );
        assert_eq!(
            ctr.termination_message_path.as_deref(),
            Some(TERMINATION_LOG)
        );
        assert_eq!(
            ctr.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let from = ctr.env_from.as_ref().unwrap();
        assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "creds");
        assert_eq!(
            pod.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-memory-0"
        );
        assert_eq!(
            ctr.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn the_secrets_digest_and_ca_shape_the_template() {
        use k8s_openapi::ByteString;
        let secret = |v: &str| Secret {
            data: Some(BTreeMap::from([("api-key".into(), ByteString(v.into()))])),
            ..Secret::default()
        };
        let (a, b) = (secret("one"), secret("two"));
        let h = |s: Option<&Secret>| secrets_hash([("keys", s)]);
        assert_eq!(h(Some(&a)), h(Some(&a.clone())));
        assert_ne!(h(Some(&a)), h(Some(&b)));
        assert_ne!(h(Some(&a)), h(None));
        assert_ne!(
            secrets_hash([("keys", Some(&a))]),
            secrets_hash([("other", Some(&a))])
        );
        let mut sts = stateful_set(&vc("instances: 2"));
        with_secrets(
            &mut sts,
            &SecretsSeen {
                hash: "abc".into(),
                tls_ca: false,
            },
        );
        let tpl = &sts.spec.as_ref().unwrap().template;
        let ann = tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(ann[SECRETS_HASH_ANNOTATION], "abc");
        assert!(
            ann.contains_key(CONFIG_HASH_ANNOTATION),
            "the config hash stays"
        );
        assert!(env(container(&sts), "VALORI_LEADER_CA_FILE").is_none());
        with_secrets(
            &mut sts,
            &SecretsSeen {
                hash: "abc".into(),
                tls_ca: true,
            },
        );
        assert_eq!(
            env(container(&sts), "VALORI_LEADER_CA_FILE")
                .unwrap()
                .value
                .as_deref(),
            Some("/tls/ca.crt")
        );
    }

    #[test]
    fn a_long_start_is_allowed_and_the_probes_follow_the_spec() {
        let c = |yaml: &str| {
            let sts = stateful_set(&vc(yaml));
            container(&sts).clone()
        };
        let d = c("instances: 1");
        let startup = d.startup_probe.unwrap();
        // An hour by default before a starting node is restarted.
        assert_eq!(
            startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
            3600
        );
        assert_eq!(
            startup.http_get.unwrap().port,
            IntOrString::String("health".into())
        );
        assert!(d
            .ports
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some("health") && p.container_port == HEALTH_PORT));
        assert_eq!(
            config_map(&vc("instances: 1")).data.unwrap()["VALORI_HEALTH_PORT"],
            HEALTH_PORT.to_string()
        );
        let set = c(r#"
instances: 1
probes:
  startupSeconds: 95
  liveness: {periodSeconds: 20, failureThreshold: 3, timeoutSeconds: 5}
  readiness: {periodSeconds: 2, failureThreshold: 1, timeoutSeconds: 1}
"#);
        assert_eq!(
            set.startup_probe.unwrap().failure_threshold,
            Some(10),
            "95 s, rounded up"
        );
        let l = set.liveness_probe.unwrap();
        assert_eq!(
            (l.period_seconds, l.failure_threshold, l.timeout_seconds),
            (Some(20), Some(3), Some(5))
        );
        let r = set.readiness_probe.unwrap();
        assert_eq!(
            (r.period_seconds, r.failure_threshold, r.timeout_seconds),
            (Some(2), Some(1), Some(1))
        );
    }

    #[test]
    fn the_leader_is_never_evicted_while_a_follower_can_take_over() {
        let p = leader_disruption_budget(&vc("instances: 3"));
        assert_eq!(p.metadata.name.as_deref(), Some("memory-leader"));
        let spec = p.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap()[ROLE_LABEL],
            "leader"
        );
        let alone = leader_disruption_budget(&vc("instances: 1"));
        assert_eq!(
            alone.spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
        assert!(
            alone.metadata.annotations.unwrap()["valori.dev/disruption"].contains("one instance")
        );
    }

    #[test]
    fn the_network_policy_admits_the_cluster_the_operator_and_the_namespace() {
        let np = network_policy(&vc("instances: 3")).unwrap().spec.unwrap();
        assert_eq!(np.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = np.ingress.unwrap();
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 3);
        assert_eq!(
            from[1]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[NAME_LABEL],
            OPERATOR_NAME
        );
        assert!(
            from[1].namespace_selector.is_some(),
            "the operator in any namespace"
        );
        let ports: Vec<_> = rules[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port.clone().unwrap())
            .collect();
        assert_eq!(
            ports,
            [IntOrString::Int(HTTP_PORT), IntOrString::Int(GRPC_PORT)]
        );
        assert!(rules[1].from.is_none(), "probes and metrics from anywhere");
        let more = network_policy(&vc(r#"
instances: 1
networkPolicy: {from: [{namespaceSelector: {matchLabels: {team: agents}}}]}
"#))
        .unwrap();
        assert_eq!(
            more.spec.unwrap().ingress.unwrap()[0]
                .from
                .as_ref()
                .unwrap()
                .len(),
            4
        );
        assert!(network_policy(&vc("instances: 1\nnetworkPolicy: {disabled: true}")).is_none());
    }

    #[test]
    fn a_hibernating_cluster_runs_no_pod() {
        let mut c = vc("instances: 3");
        assert_eq!(replicas(&c), 3);
        c.metadata.annotations = Some(BTreeMap::from([(
            HIBERNATE_ANNOTATION.to_string(),
            "true".to_string(),
        )]));
        assert!(hibernating(&c));
        assert_eq!(stateful_set(&c).spec.unwrap().replicas, Some(0));
        c.metadata.annotations = Some(BTreeMap::from([(
            HIBERNATE_ANNOTATION.to_string(),
            "false".to_string(),
        )]));
        assert_eq!(replicas(&c), 3);
    }
}
