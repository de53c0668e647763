//! Growing the pods' volumes (`spec.storage.size`) as the operator decides about it. A
//! StatefulSet's claim templates cannot change, so a larger size is carried out on the claims
//! themselves (when their StorageClass allows expansion), and the StatefulSet is then created
//! again with the new template, its pods orphaned and adopted unchanged. Pure functions; the
//! controller reads the StatefulSet, the claims and the StorageClass
//! (`controller/storage.rs`).

/// The bytes a Kubernetes quantity names (`10Gi`, `500M`, `1.5Ti`, `1e9` is not accepted: the
/// CRD's pattern allows only a number and an optional binary or decimal suffix).
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let m: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    Some(n * m)
}

/// What to do about the claims' size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Growth {
    /// The StatefulSet's template already asks for the spec's size.
    Same,
    /// Grow: patch the claims to the new size, then create the StatefulSet again.
    Grow,
    /// The size cannot change now: keep the template's size and say why.
    Blocked(String),
}

/// Whether the claims can grow from the StatefulSet's template size `current` to the spec's
/// `want`, given whether the claims' StorageClass allows expansion (`None`: no class known).
pub fn growth(current: &str, want: &str, class: Option<(&str, bool)>) -> Growth {
    let (Some(c), Some(w)) = (quantity_bytes(current), quantity_bytes(want)) else {
        return Growth::Blocked(format!(
            "cannot compare storage sizes {current:?} and {want:?}"
        ));
    };
    if c == w {
        return Growth::Same;
    }
    if w < c {
        // The CRD refuses this; a template written by hand could still hold it.
        return Growth::Blocked(format!(
            "storage cannot shrink: the claims keep {current} (spec asks {want})"
        ));
    }
    match class {
        None => Growth::Blocked(format!(
            "the claims have no StorageClass that could expand them: they stay at {current} \
             (spec asks {want})"
        )),
        Some((name, false)) => Growth::Blocked(format!(
            "the StorageClass {name} does not allow volume expansion (allowVolumeExpansion): \
             the claims stay at {current} (spec asks {want})"
        )),
        Some((_, true)) => Growth::Grow,
    }
}

/// The `StorageResized` condition from the claims' requested and reported capacities
/// (`(claim, requested, capacity)`): whether every claim has the size `want`, why not.
pub fn resized(want: &str, claims: &[(String, Option<String>, Option<String>)]) -> (bool, String) {
    let w = quantity_bytes(want);
    let waiting: Vec<String> = claims
        .iter()
        .filter(|(_, _, cap)| cap.as_deref().and_then(quantity_bytes) < w)
        .map(|(name, _, cap)| format!("{name} ({})", cap.as_deref().unwrap_or("unknown")))
        .collect();
    if waiting.is_empty() {
        (true, format!("every claim holds {want}"))
    } else {
        (
            false,
            format!(
                "expanding to {want} waits for {} (the storage driver resizes the volume; some \
                 need the pod restarted)",
                waiting.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_across_suffixes() {
        assert_eq!(quantity_bytes("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536.0));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
        assert_eq!(quantity_bytes("123"), Some(123.0));
        assert!(quantity_bytes("1Ti") > quantity_bytes("900Gi"));
        assert!(quantity_bytes("1000Mi") < quantity_bytes("1Gi"));
        assert_eq!(quantity_bytes("10Xi"), None);
        assert_eq!(quantity_bytes("Gi"), None);
    }

    #[test]
    fn claims_grow_only_where_their_class_allows() {
        assert_eq!(growth("10Gi", "10Gi", None), Growth::Same);
        assert_eq!(growth("10Gi", "10240Mi", None), Growth::Same);
        assert_eq!(growth("10Gi", "20Gi", Some(("fast", true))), Growth::Grow);
        let Growth::Blocked(why) = growth("10Gi", "20Gi", Some(("slow", false))) else {
            panic!("blocked")
        };
        assert!(
            why.contains("slow does not allow volume expansion"),
            "{why}"
        );
        assert!(
            matches!(growth("10Gi", "20Gi", None), Growth::Blocked(w) if w.contains("no StorageClass"))
        );
        assert!(
            matches!(growth("20Gi", "10Gi", Some(("fast", true))), Growth::Blocked(w) if w.contains("cannot shrink"))
        );
    }

    #[test]
    fn the_resize_is_done_when_every_claim_reports_the_size() {
        let claim = |n: &str, cap: Option<&str>| {
            (
                n.to_string(),
                Some("20Gi".to_string()),
                cap.map(str::to_string),
            )
        };
        let (ok, msg) = resized(
            "20Gi",
            &[
                claim("data-m-0", Some("20Gi")),
                claim("data-m-1", Some("10Gi")),
            ],
        );
        assert!(!ok);
        assert!(
            msg.contains("data-m-1 (10Gi)") && !msg.contains("data-m-0"),
            "{msg}"
        );
        let (ok, _) = resized(
            "20Gi",
            &[
                claim("data-m-0", Some("20Gi")),
                claim("data-m-1", Some("21474836480")),
            ],
        );
        assert!(ok);
    }
}
