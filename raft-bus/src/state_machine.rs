//! openraft's state machine over the [`EventStore`], and snapshots as files.
//!
//! A snapshot file is: a magic line, a length-prefixed header (the snapshot meta and the head
//! position), then every event length-prefixed, in position order. Stream runs and the id
//! index are rebuilt from the events when a snapshot is installed.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, RaftSnapshotBuilder, StorageIOError};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::event_store::{read_applied, AppliedState, EventStore};
use crate::types::{
    decode, encode, ApplyOutcome, Entry, LogId, SnapshotMeta, StorageError, StoredEvent,
    StoredMembership, TypeConfig,
};

const MAGIC: &[u8; 8] = b"RBSNAP01";

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
    head: u64,
}

pub struct StateMachine {
    store: EventStore,
    snapshots: Arc<SnapshotDir>,
    /// Where the snapshot being received from the leader is written.
    receiving: Option<PathBuf>,
}

/// The folder of snapshot files; one lock so that building and installing never interleave.
pub struct SnapshotDir {
    dir: PathBuf,
    lock: Mutex<()>,
}

pub struct SnapshotBuilder {
    store: EventStore,
    snapshots: Arc<SnapshotDir>,
}

impl StateMachine {
    pub fn new(store: EventStore, snapshot_dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        // Leftovers of a transfer or build that a crash interrupted.
        for entry in std::fs::read_dir(&snapshot_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(StateMachine {
            store,
            snapshots: Arc::new(SnapshotDir {
                dir: snapshot_dir,
                lock: Mutex::new(()),
            }),
            receiving: None,
        })
    }
}

impl SnapshotDir {
    /// The newest snapshot file. Normally the only one; a crash between publishing a new one
    /// and deleting the old one leaves two, named `{term}-{index}-{id}.snap`.
    fn current(&self) -> std::io::Result<Option<PathBuf>> {
        let mut found: Option<((u64, u64), PathBuf)> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "snap") {
                let name = path
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let mut parts = name.split('-').map(|p| p.parse::<u64>().unwrap_or(0));
                let key = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                if found.as_ref().is_none_or(|(k, _)| key > *k) {
                    found = Some((key, path));
                }
            }
        }
        Ok(found.map(|(_, p)| p))
    }

    /// Moves a finished file into place as the only snapshot.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> std::io::Result<PathBuf> {
        let name = format!("{}.snap", meta.snapshot_id);
        let path = self.dir.join(name);
        std::fs::rename(tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        for entry in std::fs::read_dir(&self.dir)? {
            let other = entry?.path();
            if other != path && other.extension().is_some_and(|e| e == "snap") {
                std::fs::remove_file(other)?;
            }
        }
        Ok(path)
    }
}

fn read_header(r: &mut impl Read) -> anyhow::Result<SnapshotHeader> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    anyhow::ensure!(&magic == MAGIC, "not a raft-bus snapshot file");
    Ok(decode(&read_frame(r)?.ok_or_else(|| {
        anyhow::anyhow!("snapshot file ends before its header")
    })?)?)
}

fn read_frame(r: &mut impl Read) -> anyhow::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn write_frame(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

/// Writes a consistent view of the store to a new snapshot file and publishes it.
fn build_snapshot_file(
    store: &EventStore,
    dir: &SnapshotDir,
) -> anyhow::Result<(SnapshotMeta, PathBuf)> {
    // Everything the snapshot covers must be durable before openraft purges the log.
    store.flush()?;
    let txn = store.db().begin_read()?;
    let state = read_applied(&txn)?;
    let meta = SnapshotMeta {
        last_log_id: state.last_applied,
        last_membership: state.membership.clone(),
        snapshot_id: format!(
            "{}-{}-{}",
            state.last_applied.map(|l| l.leader_id.term).unwrap_or(0),
            state.last_applied.map(|l| l.index).unwrap_or(0),
            uuid::Uuid::new_v4().simple()
        ),
    };
    let tmp = dir
        .dir
        .join(format!("build-{}.tmp", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(MAGIC)?;
    write_frame(
        &mut w,
        &encode(&SnapshotHeader {
            meta: meta.clone(),
            head: state.head,
        }),
    )?;
    EventStore::each_event(&txn, |event| Ok(write_frame(&mut w, event)?))?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let path = dir.publish(&tmp, &meta)?;
    Ok((meta, path))
}

fn install_snapshot_file(
    store: &EventStore,
    path: &Path,
    meta: &SnapshotMeta,
) -> anyhow::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let header = read_header(&mut r)?;
    anyhow::ensure!(
        header.meta.last_log_id == meta.last_log_id,
        "received snapshot covers {:?}, the leader announced {:?}",
        header.meta.last_log_id,
        meta.last_log_id
    );
    let state = AppliedState {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        head: header.head,
    };
    let events = std::iter::from_fn(move || match read_frame(&mut r) {
        Ok(Some(bytes)) => Some(decode::<StoredEvent>(&bytes).map_err(anyhow::Error::from)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    });
    store.replace(&state, events)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    err: fn(String) -> StorageError,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(format!("{e:#}"))),
        Err(e) => Err(err(e.to_string())),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let _guard = self.snapshots.lock.lock().await;
        let (store, dir) = (self.store.clone(), self.snapshots.clone());
        let (meta, path) = blocking(move || build_snapshot_file(&store, &dir), snap_err).await?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        let file = tokio::fs::File::open(path).await.map_err(snap_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let store = self.store.clone();
        let state = blocking(move || store.applied_state(), sm_err).await?;
        Ok((state.last_applied, state.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        crate::metrics::APPLY_BATCH_ENTRIES.observe(entries.len() as f64);
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let outcomes = blocking(move || store.apply(&entries), sm_err).await?;
        crate::metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        for o in &outcomes {
            if let ApplyOutcome::Batches(batches) = o {
                for b in batches {
                    if let crate::types::BatchOutcome::Appended(a) = b {
                        crate::metrics::EVENTS_APPLIED.inc_by(a.len() as u64);
                    }
                }
            }
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self
            .snapshots
            .dir
            .join(format!("receive-{}.tmp", uuid::Uuid::new_v4().simple()));
        // Read and write: install_snapshot reads back what openraft wrote here.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        if let Some(old) = self.receiving.replace(path) {
            let _ = tokio::fs::remove_file(old).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let _guard = self.snapshots.lock.lock().await;
        // Copy from the handle itself, not from the file begun for receiving: the handle is
        // whatever carries the snapshot's bytes, and our copy becomes the current snapshot.
        let path = self
            .snapshots
            .dir
            .join(format!("install-{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut src = *snapshot;
        src.flush().await.map_err(snap_err)?;
        src.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(snap_err)?;
        let mut dst = tokio::fs::File::create(&path).await.map_err(snap_err)?;
        tokio::io::copy(&mut src, &mut dst)
            .await
            .map_err(snap_err)?;
        dst.sync_all().await.map_err(snap_err)?;
        drop((src, dst));
        if let Some(received) = self.receiving.take() {
            let _ = tokio::fs::remove_file(received).await;
        }
        let (store, dir, meta) = (self.store.clone(), self.snapshots.clone(), meta.clone());
        let id = meta.snapshot_id.clone();
        blocking(
            move || {
                install_snapshot_file(&store, &path, &meta)?;
                dir.publish(&path, &meta)?;
                Ok(())
            },
            snap_err,
        )
        .await?;
        tracing::info!(snapshot = %id, "installed snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(path) = self.snapshots.current().map_err(snap_err)? else {
            return Ok(None);
        };
        let p = path.clone();
        let header = blocking(
            move || read_header(&mut BufReader::new(std::fs::File::open(p)?)),
            snap_err,
        )
        .await?;
        let file = tokio::fs::File::open(path).await.map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta: header.meta,
            snapshot: Box::new(file),
        }))
    }
}
