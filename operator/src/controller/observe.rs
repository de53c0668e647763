//! What a pass reads: the objects it applies first (their results carry the StatefulSet's
//! revision), the cluster's key and CA from its Secrets, the pods, and each pod's node.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use super::Context;
use crate::crd::ValoriCluster;
use crate::desired::{self, Names, FIELD_MANAGER};
use crate::error::Error;
use crate::failover::{NodeRef, Nodes};
use crate::plan::PodView;

/// The world as one pass found it.
pub(super) struct World {
    /// The cluster's names.
    pub names: Names,
    /// Services of the cluster's namespace.
    pub services: Api<Service>,
    /// Pods of the cluster's namespace.
    pub pods_api: Api<Pod>,
    /// The cluster's pods.
    pub pods: Vec<Pod>,
    /// How to reach each pod's node, by pod name.
    pub refs: BTreeMap<String, NodeRef>,
    /// Each pod and its node's answer, in ordinal order.
    pub views: Vec<PodView>,
    /// The client of the nodes (the cluster's key, its CA).
    pub nodes: Nodes,
    /// The StatefulSet's template revision, once its controller has observed it.
    pub update_revision: Option<String>,
    /// The `StorageResized` condition, while the volumes' size is or was changing.
    pub storage: StorageCondition,
    /// Pods whose Kubernetes node is cordoned (being drained), with the node's name.
    pub cordoned: Vec<(String, String)>,
}

/// The pods whose node is cordoned (`spec.unschedulable`), each with its node's name. A node
/// that cannot be read is taken as schedulable.
async fn cordoned(client: &Client, pods: &[Pod]) -> Result<Vec<(String, String)>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut seen: BTreeMap<String, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for p in pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let unschedulable = match seen.get(&node) {
            Some(u) => *u,
            None => {
                let u = nodes
                    .get_opt(&node)
                    .await?
                    .and_then(|n| n.spec?.unschedulable)
                    .unwrap_or(false);
                seen.insert(node.clone(), u);
                u
            }
        };
        if unschedulable {
            out.push((p.name_any(), node));
        }
    }
    Ok(out)
}

/// A condition to set: (status, reason, message).
pub(super) type StorageCondition = Option<(bool, &'static str, String)>;

/// Server-side apply of `obj` by the operator's field manager.
pub(super) async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().expect("desired objects are named");
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// Applies what does not depend on who leads and observes the cluster.
pub(super) async fn observe(vc: &ValoriCluster, ctx: &Context, ns: &str) -> Result<World, Error> {
    let client = ctx.client.clone();
    let material = material(vc, &client, ns).await?;
    let (update_revision, storage) = apply_objects(vc, &client, ns, &material.seen).await?;
    let nodes = nodes_client(ctx, &material)?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&desired::selector_string(vc)))
        .await?
        .items;
    let refs: BTreeMap<String, NodeRef> = pods
        .iter()
        .map(|p| {
            let name = p.name_any();
            let url = (ctx.urls)(vc, &name);
            (name.clone(), NodeRef { name, url })
        })
        .collect();
    let answers = futures::future::join_all(pods.iter().map(|p| {
        let r = &refs[&p.name_any()];
        let nodes = &nodes;
        async move { nodes.role(r).await.ok() }
    }))
    .await;
    let names = Names::of(vc);
    let mut views: Vec<PodView> = pods
        .iter()
        .zip(answers)
        .filter_map(|(p, node)| {
            let name = p.name_any();
            Some(PodView {
                ordinal: desired::ordinal(&names.cluster, &name)?,
                revision: p.labels().get(desired::REVISION_LABEL).cloned(),
                pod_ready: pod_ready(p),
                terminating: p.metadata.deletion_timestamp.is_some(),
                name,
                node,
            })
        })
        .collect();
    views.sort_by_key(|v| v.ordinal);
    let cordoned = cordoned(&client, &pods).await?;
    Ok(World {
        names,
        services: Api::namespaced(client, ns),
        pods_api,
        pods,
        refs,
        views,
        nodes,
        update_revision,
        storage,
        cordoned,
    })
}

/// Applies the ConfigMap, the Services that do not follow the leader, the disruption budget
/// and the StatefulSet (its claims grown first when the spec's size grew); returns the
/// StatefulSet's template revision once its controller has observed the template (until then
/// a rollout waits), and the `StorageResized` condition when the size is or was changing.
async fn apply_objects(
    vc: &ValoriCluster,
    client: &Client,
    ns: &str,
    secrets: &desired::SecretsSeen,
) -> Result<(Option<String>, StorageCondition), Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &desired::config_map(vc),
    )
    .await?;
    apply(&services, &desired::headless_service(vc)).await?;
    apply(&services, &desired::ro_service(vc)).await?;
    apply(&services, &desired::any_service(vc)).await?;
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns);
    apply(&budgets, &desired::pod_disruption_budget(vc)).await?;
    apply(&budgets, &desired::leader_disruption_budget(vc)).await?;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), ns);
    match desired::network_policy(vc) {
        Some(np) => {
            apply(&policies, &np).await?;
        }
        None => match policies
            .delete(&Names::of(vc).cluster, &Default::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        },
    }
    let mut sts = desired::stateful_set(vc);
    desired::with_secrets(&mut sts, secrets);
    let storage = super::storage::storage(vc, client, ns, &mut sts).await?;
    if !storage.apply {
        return Ok((None, storage.condition));
    }
    let sts = apply(&Api::<StatefulSet>::namespaced(client.clone(), ns), &sts).await?;
    Ok((
        sts.status
            .as_ref()
            .filter(|s| s.observed_generation == sts.metadata.generation)
            .and_then(|s| s.update_revision.clone()),
        storage.condition,
    ))
}

/// The Secrets a cluster's pods read, as one pass found them.
pub(super) struct Material {
    /// The cluster's own key, with `spec.auth` (what the operator presents to the nodes).
    pub cluster_key: Option<String>,
    /// The TLS Secret's `ca.crt`, if any.
    pub ca: Option<String>,
    /// What the pod template depends on.
    pub seen: desired::SecretsSeen,
}

/// Reads the Secrets the pods read: with `spec.auth` the users' keys (which must exist) and
/// the cluster's own key, created once with a random key when missing; with TLS the
/// certificate's Secret; with backups the credentials Secret.
pub(super) async fn material(
    vc: &ValoriCluster,
    client: &Client,
    ns: &str,
) -> Result<Material, Error> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let names = Names::of(vc);
    let mut read: Vec<(String, Option<Secret>)> = Vec::new();
    let mut cluster_key = None;
    if let Some(a) = &vc.spec.auth {
        let users = api
            .get(&a.secret_name)
            .await
            .map_err(|e| Error::reading_secret(&a.secret_name, e))?;
        for k in std::iter::once(&a.write_key).chain(a.read_key.as_ref()) {
            if !users.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                return Err(Error::Invalid(format!(
                    "the Secret {} has no key {k:?}",
                    a.secret_name
                )));
            }
        }
        read.push((a.secret_name.clone(), Some(users)));
        let name = names.cluster_key();
        let secret = match api.get_opt(&name).await? {
            Some(s) => s,
            None => {
                let key = random_key()?;
                let created = api
                    .create(
                        &kube::api::PostParams::default(),
                        &desired::cluster_key_secret(vc, &key),
                    )
                    .await;
                match created {
                    Ok(s) => s,
                    // Created meanwhile (another pass): read what is there.
                    Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        cluster_key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(desired::CLUSTER_KEY))
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
            .or_else(|| {
                // As the API server answers a create: `stringData` not yet folded into `data`.
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(desired::CLUSTER_KEY).cloned())
            });
        if cluster_key.as_deref().is_none_or(str::is_empty) {
            return Err(Error::Invalid(format!(
                "the Secret {name} has no key {:?}",
                desired::CLUSTER_KEY
            )));
        }
        read.push((name, Some(secret)));
    }
    let mut ca = None;
    if let Some(t) = &vc.spec.tls {
        let tls = api.get_opt(&t.secret_name).await?;
        ca = tls
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get("ca.crt"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
        read.push((t.secret_name.clone(), tls));
    }
    if let Some(b) = vc
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.credentials_secret.as_ref())
    {
        read.push((b.clone(), api.get_opt(b).await?));
    }
    let hash = desired::secrets_hash(read.iter().map(|(n, s)| (n.as_str(), s.as_ref())));
    Ok(Material {
        cluster_key,
        seen: desired::SecretsSeen {
            hash,
            tls_ca: ca.is_some(),
        },
        ca,
    })
}

/// 32 random bytes from the operating system, as hex.
fn random_key() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::Invalid(format!("no randomness for the cluster's key: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The client of the cluster's nodes: the cluster's own key, and for nodes serving TLS with a
/// private CA the TLS Secret's `ca.crt` (as cert-manager writes it) trusted besides the
/// system's roots.
pub(super) fn nodes_client(ctx: &Context, material: &Material) -> Result<Nodes, Error> {
    Nodes::with_ca(
        material.cluster_key.clone(),
        ctx.node_timeout,
        material.ca.as_deref().map(str::as_bytes),
    )
    .map_err(|e| Error::Invalid(format!("the TLS Secret's ca.crt: {e}")))
}

/// Whether a pod's `Ready` condition is true.
fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl World {
    /// Asks `pod`'s node for its role again.
    pub(super) async fn refresh(&mut self, pod: &str) {
        if let Some(v) = self.views.iter_mut().find(|v| v.name == pod) {
            v.node = self.nodes.role(&self.refs[pod]).await.ok();
        }
    }

    /// Asks every pod's node for its role again.
    pub(super) async fn refresh_all(&mut self) {
        let names: Vec<String> = self.views.iter().map(|v| v.name.clone()).collect();
        for n in names {
            self.refresh(&n).await;
        }
    }

    /// The sequence number `pod`'s node last reported (0 when it did not answer).
    pub(super) fn seq_of(&self, pod: &str) -> u64 {
        self.views
            .iter()
            .find(|v| v.name == pod)
            .and_then(|v| v.node.as_ref())
            .map_or(0, |n| n.seq)
    }
}
