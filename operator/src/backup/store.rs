//! The bucket side of backups: a snapshot stream into one object (checked
//! as it passes, so a cut or corrupt stream never leaves a complete
//! object), objects back out as a stream, and deletion.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kvclient::snapshot::{Decoder, SnapshotStream};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};

use super::crd::S3Destination;

/// S3 wants parts of at least 5 MiB (but the last); 8 MiB parts with two
/// in flight bound the memory of one backup to a few tens of MiB whatever
/// the store's size.
const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;

/// What a Secret named in `credentialsSecret` holds.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key id is not secret and helps tell which one is wrong.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket {bucket}: {detail}")]
    Config { bucket: String, detail: String },
    #[error("{location}: {source}")]
    Object {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading the snapshot from {endpoint}: {source}")]
    Source {
        endpoint: String,
        #[source]
        source: kvclient::ClientError,
    },
    #[error("the snapshot from {endpoint} is not valid ({source}); nothing was stored")]
    Invalid {
        endpoint: String,
        #[source]
        source: kvclient::snapshot::DecodeError,
    },
}

/// One bucket, with the prefix of a destination.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

/// Names only: the client inside holds the credentials.
impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What an upload stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Uploaded {
    pub location: String,
    pub revision: u64,
    pub keys: u64,
    pub bytes: u64,
    pub sha256: Option<String>,
}

impl Bucket {
    pub fn open(dest: &S3Destination, creds: &Credentials) -> Result<Bucket, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&dest.bucket)
            .with_region(&dest.region)
            .with_access_key_id(&creds.access_key_id)
            .with_secret_access_key(&creds.secret_access_key)
            .with_virtual_hosted_style_request(dest.virtual_hosted_style);
        if let Some(token) = &creds.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &dest.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| StoreError::Config {
            bucket: dest.bucket.clone(),
            detail: e.to_string(),
        })?;
        Ok(Bucket {
            store: Arc::new(store),
            bucket: dest.bucket.clone(),
            prefix: dest.prefix.clone(),
        })
    }

    /// The object key of `name` under the destination's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `s3://BUCKET/KEY`, as status and events show it.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn object_err(&self, key: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let location = self.location(key);
        move |source| StoreError::Object { location, source }
    }

    /// Streams `snapshot` into object `key`. The snapshot's record count
    /// and checksum are checked as it passes; the multipart upload is
    /// completed only when they hold, and aborted otherwise, so `key`
    /// never names a partial or corrupt snapshot. `progress(bytes)` is
    /// called after each chunk.
    pub async fn upload(
        &self,
        key: &str,
        mut snapshot: SnapshotStream,
        mut progress: impl FnMut(u64),
    ) -> Result<Uploaded, StoreError> {
        let path = ObjectPath::from(key);
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(self.object_err(key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut decoder = Decoder::new();
        let endpoint = snapshot.endpoint.clone();
        let streamed: Result<(), StoreError> = async {
            while let Some(chunk) =
                snapshot
                    .next_chunk()
                    .await
                    .map_err(|source| StoreError::Source {
                        endpoint: endpoint.clone(),
                        source,
                    })?
            {
                decoder
                    .feed(&chunk, |_, _, _| {})
                    .map_err(|source| StoreError::Invalid {
                        endpoint: endpoint.clone(),
                        source,
                    })?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(self.object_err(key))?;
                writer.write(&chunk);
                progress(decoder.bytes());
            }
            Ok(())
        }
        .await;
        let checked = streamed.and_then(|()| {
            decoder.finish().map_err(|source| StoreError::Invalid {
                endpoint: endpoint.clone(),
                source,
            })
        });
        match checked {
            Ok((header, trailer)) => {
                writer.finish().await.map_err(self.object_err(key))?;
                Ok(Uploaded {
                    location: self.location(key),
                    revision: header.store_revision.unwrap_or(snapshot.revision),
                    keys: trailer.records,
                    bytes: trailer.bytes,
                    sha256: trailer.sha256,
                })
            }
            Err(e) => {
                // Best effort: a bucket lifecycle rule catches what an
                // abort that fails leaves behind.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "aborting a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    /// The object `key` as a stream of chunks, and its size.
    pub async fn download(
        &self,
        key: &str,
    ) -> Result<
        (
            u64,
            impl Stream<Item = Result<Bytes, object_store::Error>> + Send + 'static,
        ),
        StoreError,
    > {
        let got = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(self.object_err(key))?;
        let size = got.meta.size;
        Ok((size, got.into_stream()))
    }

    /// Deletes `key`; an object already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_err(key)(e)),
        }
    }

    /// Keys under the destination's prefix, sorted.
    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut keys = Vec::new();
        let mut listing = self.store.list(prefix.as_ref());
        while let Some(meta) = listing.next().await {
            keys.push(
                meta.map_err(self.object_err(&self.prefix))?
                    .location
                    .to_string(),
            );
        }
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_names_no_secret() {
        let dest = S3Destination {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "b1".into(),
            prefix: "p/".into(),
            region: "us-east-1".into(),
            credentials_secret: "s".into(),
            virtual_hosted_style: false,
        };
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret-key".into(),
            session_token: Some("session-secret".into()),
        };
        let bucket = Bucket::open(&dest, &creds).expect("bucket");
        let text = format!("{bucket:?} {creds:?}");
        assert!(!text.contains("very-secret-key"), "{text}");
        assert!(!text.contains("session-secret"), "{text}");
        assert!(
            text.contains("b1") && text.contains("AKIDEXAMPLE"),
            "{text}"
        );
    }
}
