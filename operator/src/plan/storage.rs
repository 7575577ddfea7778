//! `spec.storage` against the volume templates the StatefulSet was made
//! with and the PVCs it made: grow the volumes in place where the storage
//! class allows it, report anything else.

use super::PlanInput;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum StorageChange {
    /// A larger size on a class that allows expansion: `resize` these PVCs
    /// to `spec.storage.size`, and replace the StatefulSet (deleted with
    /// its pods orphaned, then created again) when its volume template
    /// still has the old size, since that template is immutable.
    Expand {
        resize: Vec<String>,
        replace_statefulset: bool,
    },
    /// Not applied, and why (the Degraded message).
    NotApplied(String),
}

pub(super) fn storage_change(input: &PlanInput) -> Option<StorageChange> {
    let want = &input.spec.storage;
    let kept = input.observed.statefulset_storage.as_ref();
    if let Some(kept) = kept
        && kept.storage_class_name != want.storage_class_name
    {
        let class = |c: &Option<String>| c.clone().unwrap_or_else(|| "(default)".into());
        let mut changes = Vec::new();
        if !same_quantity(&kept.size.0, &want.size.0) {
            changes.push(format!("size {} -> {}", kept.size.0, want.size.0));
        }
        changes.push(format!(
            "storageClassName {} -> {}",
            class(&kept.storage_class_name),
            class(&want.storage_class_name)
        ));
        return Some(StorageChange::NotApplied(format!(
            "spec.storage changed ({}) but existing volumes cannot move to another storage \
             class; set spec.storage.storageClassName back",
            changes.join(", ")
        )));
    }
    let want_bytes = quantity_value(&want.size.0);
    let smaller = |q: &str| match (quantity_value(q), want_bytes) {
        (Some(have), Some(bytes)) => have < bytes && !same_quantity(q, &want.size.0),
        _ => false,
    };
    if let Some(kept) = kept
        && !same_quantity(&kept.size.0, &want.size.0)
        && !smaller(&kept.size.0)
    {
        return Some(StorageChange::NotApplied(format!(
            "spec.storage.size {} -> {}: volumes cannot shrink; set spec.storage.size back",
            kept.size.0, want.size.0
        )));
    }
    // PVCs below the new size: all of them after a size change, or the
    // ones a crash left behind.
    let resize: Vec<_> = input
        .observed
        .pvcs
        .iter()
        .filter(|p| p.requested.as_ref().is_some_and(|q| smaller(&q.0)))
        .collect();
    let replace_statefulset = kept.is_some_and(|k| smaller(&k.size.0));
    if resize.is_empty() && !replace_statefulset {
        return None;
    }
    for pvc in &resize {
        let why = match pvc.storage_class.as_deref() {
            None => Some(format!("{} has no storage class", pvc.name)),
            Some(class) => match input.observed.expandable_classes.get(class) {
                Some(true) => None,
                Some(false) => Some(format!(
                    "storage class {class} does not allow volume expansion (allowVolumeExpansion)"
                )),
                None => Some(format!(
                    "storage class {class} could not be read (missing, or the operator may not \
                     get storageclasses)"
                )),
            },
        };
        if let Some(why) = why {
            return Some(StorageChange::NotApplied(format!(
                "spec.storage.size -> {}: not applied, {why}; the volumes keep their size. Set \
                 spec.storage.size back",
                want.size.0
            )));
        }
    }
    Some(StorageChange::Expand {
        resize: resize.iter().map(|p| p.name.clone()).collect(),
        replace_statefulset,
    })
}

/// The reason and message of a storage change that is not applied.
pub(super) fn storage_trouble(input: &PlanInput) -> Option<String> {
    match storage_change(input)? {
        StorageChange::NotApplied(message) => Some(message),
        StorageChange::Expand { .. } => None,
    }
}

/// Quantities compare by value: `1Gi` and `1024Mi` are the same size.
pub(super) fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity_value(a), quantity_value(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
        _ => a.trim() == b.trim(),
    }
}

pub(super) fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}
