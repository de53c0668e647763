//! A backup destination: an object store and a prefix, and the layout of a backup under it.
//!
//! ```text
//! <prefix>/snapshots/<seq, 20 digits>.vsnap   a snapshot file, as the node writes it
//! <prefix>/snapshots/<seq, 20 digits>.json    its manifest, written once the file is complete
//! <prefix>/log/<first>-<last>-<chain>.vseg    shipped log entries (see `segment`)
//! ```
//!
//! A snapshot without its manifest is an upload that did not finish: it is ignored by restores
//! and removed by retention.

use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use super::segment::SegmentName;
use super::BackupError;

/// Where backups go: one of `s3://bucket/prefix`, `gs://bucket/prefix`,
/// `az://container/prefix` (also `azure://`, `abfs://`), or `file:///directory`.
#[derive(Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// A complete snapshot in the destination, as its manifest describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// The sequence number it captures.
    pub seq: u64,
    /// Chain hash at `seq`, hex.
    pub chain_hash: String,
    /// State hash at `seq`, hex.
    pub state_hash: String,
    /// Size of the snapshot file.
    pub bytes: u64,
    /// When its upload started and finished (RFC 3339, UTC).
    pub started: String,
    /// See `started`.
    pub finished: String,
}

/// What a destination holds.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Complete snapshots, oldest first.
    pub snapshots: Vec<SnapshotManifest>,
    /// Snapshot files without a manifest (unfinished uploads), by sequence number.
    pub unfinished: Vec<u64>,
    /// Segments, by first sequence number.
    pub segments: Vec<SegmentName>,
    /// When each segment was written (milliseconds since the Unix epoch, as the store reports
    /// its objects' last modification).
    pub shipped_ms: std::collections::BTreeMap<SegmentName, i64>,
}

impl Listing {
    /// The highest sequence number the backup reaches by its snapshots and segments.
    pub fn reaches(&self) -> u64 {
        let snap = self.snapshots.last().map_or(0, |s| s.seq);
        let seg = self.segments.iter().map(|s| s.last).max().unwrap_or(0);
        snap.max(seg)
    }

    /// The highest sequence number the backup reached at `ms` (milliseconds since the Unix
    /// epoch): by the snapshots whose upload had finished and the segments written by then.
    /// `None` when nothing had been.
    pub fn reached_at(&self, ms: i64) -> Option<u64> {
        let snap = self
            .snapshots
            .iter()
            .filter(|s| {
                humantime::parse_rfc3339_weak(&s.finished).is_ok_and(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .is_ok_and(|d| d.as_millis() as i64 <= ms)
                })
            })
            .map(|s| s.seq)
            .max();
        let seg = self
            .shipped_ms
            .iter()
            .filter(|(_, &t)| t <= ms)
            .map(|(s, _)| s.last)
            .max();
        snap.max(seg)
    }
}

fn snapshot_name(seq: u64) -> String {
    format!("snapshots/{seq:020}.vsnap")
}

fn manifest_name(seq: u64) -> String {
    format!("snapshots/{seq:020}.json")
}

impl Destination {
    /// Opens the destination a URL names. Credentials and settings come from the environment
    /// as each store's own documentation gives them (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, web identity
    /// tokens; `GOOGLE_SERVICE_ACCOUNT` or the workload's identity; `AZURE_STORAGE_*`). Nothing
    /// is contacted yet.
    pub fn open(url: &str) -> Result<Destination, BackupError> {
        let bad = |why: String| BackupError::Config(format!("backup destination {url:?}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not a URL (s3://, gs://, az:// or file://)".into()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("a file:// URL needs an absolute path".into()));
                }
                std::fs::create_dir_all(rest).map_err(|e| bad(format!("creating {rest}: {e}")))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(rest)
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(fs), String::new())
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("the URL names no bucket".into()));
                }
                let root = format!("{scheme}://{bucket}");
                let store: Arc<dyn ObjectStore> = match scheme {
                    "s3" | "s3a" => Arc::new(
                        object_store::aws::AmazonS3Builder::from_env()
                            .with_url(root)
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    "gs" => Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_url(root)
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    _ => Arc::new(
                        object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_url(root)
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                };
                (store, path.trim_matches('/').to_string())
            }
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        };
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("the prefix may not contain . or .. parts".into()));
        }
        Ok(Destination {
            store,
            prefix,
            url: url.to_string(),
        })
    }

    /// The URL it was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, rel: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn err(&self, doing: String, e: object_store::Error) -> BackupError {
        BackupError::Store {
            doing: format!("{doing} in {}", self.url),
            source: e,
        }
    }

    /// Lists the snapshots and segments under the prefix.
    pub async fn list(&self) -> Result<Listing, BackupError> {
        let mut out = Listing::default();
        let mut files = std::collections::BTreeSet::new();
        for dir in ["snapshots", "log"] {
            let mut stream = self.store.list(Some(&self.path(dir)));
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.err(format!("listing {dir}/"), e))?;
                let Some(name) = meta.location.filename() else {
                    continue;
                };
                if dir == "log" {
                    if let Some(s) = SegmentName::parse(name) {
                        out.shipped_ms
                            .insert(s, meta.last_modified.timestamp_millis());
                        out.segments.push(s);
                    }
                } else if let Some(seq) = name.strip_suffix(".vsnap").and_then(|n| n.parse().ok()) {
                    files.insert(seq);
                }
            }
        }
        for seq in files {
            match self.manifest(seq).await? {
                Some(m) => out.snapshots.push(m),
                None => out.unfinished.push(seq),
            }
        }
        out.segments.sort();
        Ok(out)
    }

    /// The manifest of the snapshot at `seq`, if its upload finished.
    async fn manifest(&self, seq: u64) -> Result<Option<SnapshotManifest>, BackupError> {
        let name = manifest_name(seq);
        let bytes = match self.store.get(&self.path(&name)).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.err(format!("reading {name}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(format!("reading {name}"), e)),
        };
        let m: SnapshotManifest = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::Corrupt(format!("{name} in {}: {e}", self.url)))?;
        if m.seq != seq {
            return Err(BackupError::Corrupt(format!(
                "{name} in {} describes sequence number {}",
                self.url, m.seq
            )));
        }
        Ok(Some(m))
    }

    /// Uploads the snapshot file `file` (its bytes `map`, already verified) in parts, never
    /// whole in memory, then its manifest, whose `finished` it sets once the file is complete:
    /// the snapshot counts only once both are there.
    pub async fn put_snapshot(
        &self,
        map: &[u8],
        manifest: &mut SnapshotManifest,
    ) -> Result<(), BackupError> {
        let name = snapshot_name(manifest.seq);
        let doing = || format!("uploading {name}");
        let upload = self
            .store
            .put_multipart(&self.path(&name))
            .await
            .map_err(|e| self.err(doing(), e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        for part in map.chunks(PART_BYTES) {
            // At most two parts in flight: memory stays a few parts, whatever the file's size.
            if let Err(e) = w.wait_for_capacity(2).await {
                return Err(self.err(doing(), e));
            }
            w.write(part);
        }
        w.finish().await.map_err(|e| self.err(doing(), e))?;
        manifest.finished = super::rfc3339(std::time::SystemTime::now());
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        let name = manifest_name(manifest.seq);
        self.store
            .put(&self.path(&name), json.into())
            .await
            .map_err(|e| self.err(format!("writing {name}"), e))?;
        Ok(())
    }

    /// Streams the snapshot at `seq` into the file `to`, synced. Returns its size.
    pub async fn get_snapshot(&self, seq: u64, to: &std::path::Path) -> Result<u64, BackupError> {
        use std::io::Write;
        let name = snapshot_name(seq);
        let doing = || format!("downloading {name}");
        let got = self
            .store
            .get(&self.path(&name))
            .await
            .map_err(|e| self.err(doing(), e))?;
        let local =
            |e: std::io::Error| BackupError::Local(format!("writing {}: {e}", to.display()));
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(to).map_err(local)?);
        let mut stream = got.into_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err(doing(), e))?;
            out.write_all(&chunk).map_err(local)?;
            bytes += chunk.len() as u64;
        }
        let f = out.into_inner().map_err(|e| local(e.into_error()))?;
        f.sync_all().map_err(local)?;
        Ok(bytes)
    }

    /// Uploads a segment under its name.
    pub async fn put_segment(&self, name: &SegmentName, bytes: Vec<u8>) -> Result<(), BackupError> {
        let rel = format!("log/{}", name.file_name());
        self.store
            .put(&self.path(&rel), bytes.into())
            .await
            .map_err(|e| self.err(format!("uploading {rel}"), e))?;
        Ok(())
    }

    /// A segment's bytes.
    pub async fn get_segment(&self, name: &SegmentName) -> Result<Vec<u8>, BackupError> {
        let rel = format!("log/{}", name.file_name());
        let got = self
            .store
            .get(&self.path(&rel))
            .await
            .map_err(|e| self.err(format!("downloading {rel}"), e))?;
        Ok(got
            .bytes()
            .await
            .map_err(|e| self.err(format!("downloading {rel}"), e))?
            .to_vec())
    }

    /// Removes a snapshot: its manifest first, so that what is left of it is never mistaken for
    /// a complete snapshot.
    pub async fn delete_snapshot(&self, seq: u64) -> Result<(), BackupError> {
        for name in [manifest_name(seq), snapshot_name(seq)] {
            match self.store.delete(&self.path(&name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(format!("removing {name}"), e)),
            }
        }
        Ok(())
    }

    /// Removes a segment.
    pub async fn delete_segment(&self, name: &SegmentName) -> Result<(), BackupError> {
        let rel = format!("log/{}", name.file_name());
        match self.store.delete(&self.path(&rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("removing {rel}"), e)),
        }
    }
}

/// Size of each part of a snapshot upload. S3 needs at least 5 MiB for every part but the
/// last.
const PART_BYTES: usize = 8 << 20;
