//! `kvnode certs ...`: the command-line face of raftkv's small CA (the
//! `raftkv-pki` crate), for clusters that have no CA of their own
//! (`scripts/local-cluster.sh --secure`).

pub use raftkv_pki::{CertError, Pem, Usage, issue, new_ca, read_pair, write_pair};

/// `kvnode certs ...`: returns what it wrote, for the one line it prints.
pub fn run(cmd: &crate::config::CertsCommand) -> Result<String, CertError> {
    use crate::config::CertsCommand as C;
    let check_days = |days: i64| {
        if (1..=36_500).contains(&days) {
            Ok(())
        } else {
            Err(CertError::Invalid(format!(
                "--days {days}: expected 1 to 36500"
            )))
        }
    };
    match cmd {
        C::Ca { dir, days } => {
            check_days(*days)?;
            if dir.join("ca.crt").exists() {
                return Ok(format!("{} exists; kept", dir.join("ca.crt").display()));
            }
            let (cert, _) = write_pair(dir, "ca", &new_ca("raftkv CA", *days)?)?;
            Ok(format!("wrote {}", cert.display()))
        }
        C::Node {
            dir,
            name,
            sans,
            days,
        } => {
            check_days(*days)?;
            let ca = read_pair(dir, "ca")?;
            let (cert, _) = write_pair(dir, name, &issue(&ca, name, sans, Usage::Node, *days)?)?;
            Ok(format!("wrote {}", cert.display()))
        }
        C::Client { dir, name, days } => {
            check_days(*days)?;
            let ca = read_pair(dir, "ca")?;
            let (cert, _) = write_pair(dir, name, &issue(&ca, name, &[], Usage::Client, *days)?)?;
            Ok(format!("wrote {}", cert.display()))
        }
    }
}
