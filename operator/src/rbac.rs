//! The permissions the operator needs, and nothing more: the chart's ClusterRole and Role hold
//! exactly these (a test renders the chart and compares), and the reconcile scenarios check
//! that every request the operator makes is covered by them.

/// One RBAC rule: an API group, a resource, and verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource (or `resource/subresource`).
    pub resource: &'static str,
    /// The verbs.
    pub verbs: &'static [&'static str],
    /// Why the operator needs them.
    pub why: &'static str,
}

/// What the operator may do in every namespace (a ClusterRole): it reconciles clusters
/// wherever they are created.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        group: "valori.dev",
        resource: "valoriclusters",
        verbs: &["get", "list", "watch", "patch"],
        why: "the resources it reconciles (get: the cluster a ValoriBackup names; patch: removing a valori.dev/switchover-to annotation once carried out)",
    },
    Rule {
        group: "valori.dev",
        resource: "valoriclusters/status",
        verbs: &["patch"],
        why: "their status, by server-side apply",
    },
    Rule {
        group: "valori.dev",
        resource: "valoriclusters/finalizers",
        verbs: &["update"],
        why: "owner references that block the owner's deletion need it where the OwnerReferencesPermissionEnforcement admission plugin runs",
    },
    Rule {
        group: "valori.dev",
        resource: "valoribackups",
        verbs: &["list", "watch"],
        why: "on-demand backups",
    },
    Rule {
        group: "valori.dev",
        resource: "valoribackups/status",
        verbs: &["patch"],
        why: "their status, by server-side apply",
    },
    Rule {
        group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "the pods' StatefulSet: watched, and server-side applied (an apply that creates is authorized as create too); get: whether a restored cluster's exists yet; delete (orphaning its pods) to create it again with larger claim templates",
    },
    Rule {
        group: "batch",
        resource: "jobs",
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "the Job that restores a cluster bootstrapped from a backup, and its end",
    },
    Rule {
        group: "",
        resource: "services",
        verbs: &["list", "watch", "create", "patch"],
        why: "the read-write, read-only, any-instance and headless Services",
    },
    Rule {
        group: "",
        resource: "configmaps",
        verbs: &["create", "patch"],
        why: "the nodes' settings",
    },
    Rule {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["create", "patch"],
        why: "the cluster's PodDisruptionBudget",
    },
    Rule {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["create", "patch", "delete"],
        why: "the cluster's NetworkPolicy (deleted when spec.networkPolicy.disabled)",
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: &["list", "watch", "patch", "delete"],
        why: "observing pods (and the restore Job's, for its report), their role labels, restarting one for a rollout or a heal",
    },
    Rule {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list", "create", "patch", "delete"],
        why: "the first pod's claim, restored before the StatefulSet exists; grown when spec.storage.size grows; deleted to re-bootstrap a diverged follower from an empty volume",
    },
    Rule {
        group: "",
        resource: "nodes",
        verbs: &["get"],
        why: "whether the leader's node is cordoned (a drain): the leadership moves first",
    },
    Rule {
        group: "storage.k8s.io",
        resource: "storageclasses",
        verbs: &["get"],
        why: "whether the claims' StorageClass allows volume expansion",
    },
    Rule {
        group: "",
        resource: "secrets",
        verbs: &["get", "create"],
        why: "the Secrets a cluster's pods read (hashed into the pod template, so that a rotation rolls the pods); create: the cluster's own key, which the operator presents to the nodes and followers to their leader",
    },
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        why: "Events on the clusters (patch adds to a repeated event's series)",
    },
];

/// What the operator may do in its own namespace (a Role): leader election.
pub const NAMESPACE_RULES: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
    why: "the leader-election Lease",
}];

/// Whether a rule is about a cluster-scoped resource: always in the ClusterRole, also when the
/// operator watches only some namespaces (then the other rules are Roles in each of them).
pub fn cluster_scoped(r: &Rule) -> bool {
    matches!(r.resource, "nodes" | "storageclasses")
}

/// Whether `rules` allow `verb` on `resource` in `group`.
pub fn allows(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules
        .iter()
        .any(|r| r.group == group && r.resource == resource && r.verbs.contains(&verb))
}
