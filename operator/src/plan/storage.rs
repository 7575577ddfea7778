//! `spec.storage` against the volume templates the StatefulSet was made with.

use super::PlanInput;

/// Why `spec.storage` differs from the volumes the StatefulSet creates, if
/// it does. A StatefulSet's volume claim templates are immutable, so the
/// change is reported and not applied.
pub(super) fn storage_change(input: &PlanInput) -> Option<String> {
    let kept = input.observed.statefulset_storage.as_ref()?;
    let want = &input.spec.storage;
    let mut changes = Vec::new();
    if !same_quantity(&kept.size.0, &want.size.0) {
        changes.push(format!("size {} -> {}", kept.size.0, want.size.0));
    }
    if kept.storage_class_name != want.storage_class_name {
        let class = |c: &Option<String>| c.clone().unwrap_or_else(|| "(default)".into());
        changes.push(format!(
            "storageClassName {} -> {}",
            class(&kept.storage_class_name),
            class(&want.storage_class_name)
        ));
    }
    (!changes.is_empty()).then(|| {
        format!(
            "spec.storage changed ({}) but a StatefulSet's volume templates cannot change: \
             existing and new volumes keep the old values. Expand the PVCs yourself if the \
             storage class allows it, or set spec.storage back",
            changes.join(", ")
        )
    })
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
