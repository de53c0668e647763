//! Growing the pods' volumes when `spec.storage.size` grows ([`crate::storage`] decides): the
//! claims are patched to the new size, then the StatefulSet (whose claim templates cannot
//! change) is deleted with its pods orphaned and created again by the next pass with the new
//! template; the pods keep running and the new StatefulSet adopts them. Where the claims'
//! StorageClass does not allow expansion, the StatefulSet keeps its size and the
//! `StorageResized` condition says why.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::crd::ValoriCluster;
use crate::desired::{self, Names};
use crate::error::Error;
use crate::storage::{growth, resized, Growth};

/// What this pass found about the volumes' size.
pub(super) struct Storage {
    /// Whether to apply the StatefulSet now (not while the old one is being deleted).
    pub apply: bool,
    /// The `StorageResized` condition to set, if the size is or was changing: (status,
    /// reason, message).
    pub condition: Option<(bool, &'static str, String)>,
}

fn template_size(sts: &StatefulSet) -> Option<String> {
    let t = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?;
    let q = t
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Some(q.0.clone())
}

fn set_template_size(sts: &mut StatefulSet, size: &str) {
    if let Some(requests) = sts
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
        .and_then(|t| t.first_mut())
        .and_then(|t| t.spec.as_mut())
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut())
    {
        requests.insert("storage".into(), Quantity(size.into()));
    }
}

/// The cluster's claims (`data-<cluster>-<ordinal>`, whatever the replica count).
async fn claims(
    api: &Api<PersistentVolumeClaim>,
    vc: &ValoriCluster,
) -> Result<Vec<PersistentVolumeClaim>, Error> {
    let names = Names::of(vc);
    let prefix = names.claim(&format!("{}-", names.cluster));
    Ok(api
        .list(&ListParams::default().labels(&desired::selector_string(vc)))
        .await?
        .items
        .into_iter()
        .filter(|c| {
            c.name_any()
                .strip_prefix(&prefix)
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect())
}

/// Compares the StatefulSet's claim size with the spec's and carries out a growth; `sts` is the
/// desired StatefulSet, whose claim size is set back to the current one when it cannot grow.
pub(super) async fn storage(
    vc: &ValoriCluster,
    client: &Client,
    ns: &str,
    sts: &mut StatefulSet,
) -> Result<Storage, Error> {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let want = vc.spec.storage.size.clone();
    let Some(current) = sts_api.get_opt(&Names::of(vc).cluster).await? else {
        return Ok(Storage {
            apply: true,
            condition: None,
        });
    };
    if current.metadata.deletion_timestamp.is_some() {
        // Deleted for a growth; the next pass creates it again.
        return Ok(Storage {
            apply: false,
            condition: Some((
                false,
                "Resizing",
                "waiting for the old StatefulSet to go (its pods stay)".into(),
            )),
        });
    }
    let Some(size) = template_size(&current) else {
        return Ok(Storage {
            apply: true,
            condition: None,
        });
    };
    let was_resizing = vc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "StorageResized"))
        .is_some_and(|c| c.status == "False");
    let decision = if size == want {
        Growth::Same
    } else {
        let claims = claims(&claims_api, vc).await?;
        let class_name = vc.spec.storage.storage_class.clone().or_else(|| {
            claims
                .iter()
                .find_map(|c| c.spec.as_ref()?.storage_class_name.clone())
        });
        let class = match &class_name {
            Some(name) => Api::<StorageClass>::all(client.clone())
                .get_opt(name)
                .await?
                .map(|c| (name.as_str(), c.allow_volume_expansion == Some(true))),
            None => None,
        };
        let decision = growth(&size, &want, class);
        if decision == Growth::Grow {
            for c in &claims {
                let asked = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
                    .and_then(|q| crate::storage::quantity_bytes(&q.0));
                if asked < crate::storage::quantity_bytes(&want) {
                    claims_api
                        .patch(
                            &c.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({
                                "spec": {"resources": {"requests": {"storage": want}}}
                            })),
                        )
                        .await?;
                }
            }
            sts_api
                .delete(
                    &current.name_any(),
                    &DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Orphan),
                        ..DeleteParams::default()
                    },
                )
                .await?;
            tracing::info!(from = %size, to = %want, "claims grown; the StatefulSet is created again");
            return Ok(Storage {
                apply: false,
                condition: Some((
                    false,
                    "Resizing",
                    format!(
                        "growing the claims from {size} to {want}; the StatefulSet is created \
                         again with the new size (its pods stay)"
                    ),
                )),
            });
        }
        decision
    };
    match decision {
        Growth::Blocked(why) => {
            set_template_size(sts, &size);
            Ok(Storage {
                apply: true,
                condition: Some((false, "ExpansionNotPossible", why)),
            })
        }
        Growth::Same if was_resizing => {
            let rows: Vec<(String, Option<String>, Option<String>)> = claims(&claims_api, vc)
                .await?
                .iter()
                .map(|c| {
                    let req = c
                        .spec
                        .as_ref()
                        .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
                        .map(|q| q.0.clone());
                    let cap = c
                        .status
                        .as_ref()
                        .and_then(|s| s.capacity.as_ref()?.get("storage"))
                        .map(|q| q.0.clone());
                    (c.name_any(), req, cap)
                })
                .collect();
            let (done, message) = resized(&want, &rows);
            Ok(Storage {
                apply: true,
                condition: Some((done, if done { "Resized" } else { "Resizing" }, message)),
            })
        }
        Growth::Same | Growth::Grow => Ok(Storage {
            apply: true,
            condition: None,
        }),
    }
}
