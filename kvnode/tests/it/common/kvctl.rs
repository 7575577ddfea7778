//! kvctl for the tests: built once per test process, run against the
//! cluster's endpoints, with helpers for its answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// kvctl, built once per test process. It is its own package, and `cargo
/// nextest run` builds only the binaries of the package under test, so on a
/// fresh machine it is missing. The build uses the selection of the test
/// build (`--workspace --all-targets`, the same target dir and profile):
/// cargo unifies features per selection, so with the same one nothing is
/// recompiled (RocksDB least of all) and only missing binaries are linked.
pub fn kvctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let kvnode = Path::new(env!("CARGO_BIN_EXE_kvnode"));
        let profile_dir = kvnode.parent().expect("kvnode's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(super::manifest_dir())
            .args(["build", "--workspace", "--all-targets", "--target-dir"])
            .arg(target_dir)
            .stdin(Stdio::null());
        // The test runner adds variables a shell build does not have, and
        // build scripts track some (clang-sys: LD_LIBRARY_PATH, which
        // nextest sets): with them cargo would see a changed environment and
        // rebuild, RocksDB included. Drop what the runner added.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let added = k == "LD_LIBRARY_PATH"
                || k.starts_with("NEXTEST")
                || (k.starts_with("CARGO_")
                    && !matches!(&*k, "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_TERM_COLOR"));
            if added {
                build.env_remove(&*k);
            }
        }
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let out = build.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build (for kvctl) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = kvnode.with_file_name(format!("kvctl{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
}

pub fn run(endpoint: &str, args: &[&str]) -> Output {
    Command::new(kvctl_bin())
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kvctl")
}

/// kvctl with `input` on its stdin (a pipe, not a terminal) and extra
/// environment variables.
pub fn run_with(endpoint: &str, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(kvctl_bin())
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kvctl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("kvctl output")
}

pub fn ok(endpoint: &str, args: &[&str]) -> String {
    let out = run(endpoint, args);
    assert!(
        out.status.success(),
        "kvctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ok_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let out = ok(endpoint, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kvctl {args:?}: {e}: {out}"))
}

/// Runs a command that must fail: non-zero exit, one line on stderr, which
/// is returned.
pub fn fails(endpoint: &str, args: &[&str]) -> String {
    let out = run(endpoint, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kvctl {args:?} succeeded: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}
