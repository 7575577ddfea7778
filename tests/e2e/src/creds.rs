//! What it takes to talk to the nodes of one KvCluster, read the way a user
//! would: whether they speak TLS (their StatefulSet passes `--cert-file`),
//! the operator's client certificate (Secret `NAME-operator-client`: CA
//! bundle and a certificate with CN `root`), and root's password (Secret
//! `NAME-root`) for a token once auth is on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::kv::Target;

/// PEM files of `NAME-operator-client`.
#[derive(Clone)]
pub struct ClientPem {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for ClientPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientPem(..)")
    }
}

/// One cluster's access material, cached for the scenario.
#[derive(Debug, Default)]
pub struct Creds {
    pub tls: bool,
    client: Mutex<Option<ClientPem>>,
    token: Mutex<Option<String>>,
}

impl Creds {
    pub fn token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    pub fn set_token(&self, token: Option<String>) {
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
    }
}

/// The KvCluster a target belongs to: the client Service is `NAME`, the
/// peer Service `NAME-peer`, pods `NAME-<ordinal>`.
pub fn cluster_of(target: &Target) -> String {
    match target {
        Target::Service(name) => name.strip_suffix("-peer").unwrap_or(name).to_owned(),
        Target::Pod(pod) => match pod.rsplit_once('-') {
            Some((cluster, ordinal)) if ordinal.parse::<u32>().is_ok() => cluster.to_owned(),
            _ => pod.clone(),
        },
    }
}

pub fn client_secret(cluster: &str) -> String {
    format!("{cluster}-operator-client")
}

pub fn root_secret(cluster: &str) -> String {
    format!("{cluster}-root")
}

pub fn tls_secret(cluster: &str) -> String {
    format!("{cluster}-tls")
}

#[derive(Clone)]
pub struct Registry {
    client: kube::Client,
    namespace: String,
    known: Arc<Mutex<HashMap<String, Arc<Creds>>>>,
}

impl Registry {
    pub fn new(client: kube::Client, namespace: &str) -> Registry {
        Registry {
            client,
            namespace: namespace.to_owned(),
            known: Arc::default(),
        }
    }

    /// The cluster's material. Its TLS mode is fixed once it runs, so it is
    /// cached from the first StatefulSet seen; before that the default
    /// (TLS on) is assumed and not cached.
    pub async fn get(&self, cluster: &str) -> Result<Arc<Creds>, String> {
        if let Some(c) = self.known.lock().ok().and_then(|k| k.get(cluster).cloned()) {
            return Ok(c);
        }
        let sts = Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(cluster)
            .await
            .map_err(|e| format!("reading StatefulSet {cluster}: {e}"))?;
        let Some(sts) = sts else {
            return Ok(Arc::new(Creds {
                tls: true,
                ..Creds::default()
            }));
        };
        let tls = sts
            .spec
            .and_then(|s| s.template.spec)
            .into_iter()
            .flat_map(|p| p.containers)
            .flat_map(|c| c.args.unwrap_or_default())
            .any(|a| a.starts_with("--cert-file"));
        let creds = Arc::new(Creds {
            tls,
            ..Creds::default()
        });
        if let Ok(mut known) = self.known.lock() {
            return Ok(known.entry(cluster.to_owned()).or_insert(creds).clone());
        }
        Ok(creds)
    }

    /// The CA bundle and root client certificate of the cluster.
    pub async fn client_pem(&self, cluster: &str) -> Result<ClientPem, String> {
        let creds = self.get(cluster).await?;
        if let Some(pem) = creds.client.lock().ok().and_then(|c| c.clone()) {
            return Ok(pem);
        }
        let data = self.secret(&client_secret(cluster)).await?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .ok_or_else(|| format!("Secret {} has no {key}", client_secret(cluster)))
        };
        let pem = ClientPem {
            ca: text("ca.crt")?,
            cert: text("tls.crt")?,
            key: text("tls.key")?,
        };
        if let Ok(mut c) = creds.client.lock() {
            *c = Some(pem.clone());
        }
        Ok(pem)
    }

    /// root's password, from `NAME-root`.
    pub async fn root_password(&self, cluster: &str) -> Result<String, String> {
        let data = self.secret(&root_secret(cluster)).await?;
        data.get("password")
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .ok_or_else(|| format!("Secret {} has no password", root_secret(cluster)))
    }

    /// A Secret's data; `Err` when it does not exist (yet).
    pub async fn secret(&self, name: &str) -> Result<HashMap<String, Vec<u8>>, String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("reading Secret {name}: {e}"))?
            .ok_or_else(|| format!("no Secret {name} (yet)"))?;
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_cluster() {
        assert_eq!(cluster_of(&Target::service("kv")), "kv");
        assert_eq!(cluster_of(&Target::service("kv-peer")), "kv");
        assert_eq!(cluster_of(&Target::pod("my-kv-12")), "my-kv");
        assert_eq!(cluster_of(&Target::pod("odd")), "odd");
    }
}
