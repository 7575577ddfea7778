//! The committed CRD must be exactly what the Rust types generate: the
//! Helm chart and `kubectl apply -f crds/` install that file, so a type
//! change without `raftkv-operator crd > crds/kvclusters.raftkv.io.yaml`
//! would ship a schema the operator does not match.

use std::path::Path;

#[test]
fn committed_crd_matches_the_types() {
    // The runner's CARGO_MANIFEST_DIR: the compile-time one is stale when a
    // target directory is shared by clones at different paths.
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = Path::new(&dir).join("../crds/kvclusters.raftkv.io.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = raftkv_operator::crd::crd_yaml().expect("CRD renders");
    assert!(
        committed == generated,
        "{} is stale; regenerate it with `cargo run -p raftkv-operator -- crd > crds/kvclusters.raftkv.io.yaml`",
        path.display()
    );
}
