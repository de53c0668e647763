//! The single writer thread: the only code that changes the state. It takes jobs from a
//! channel in order; client writes waiting together form one group commit, and every other
//! job (replicated entries, a snapshot, a restore, a role change) runs between groups, so it
//! sees the effects of every write queued before it and none after.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;
use valori_api::Role;
use valori_kernel::exec::Threads;
use valori_kernel::{Event, Kernel};

use super::copies::{reclaim, Copies, Recorded};
use super::restore::{restore, InstallMode};
use super::role::not_writable;
use super::snapshots::{maybe_snapshot, take_snapshot};
use super::{config::wait_at_gate, Committed, Shared};
use crate::error::{Failure, NodeError, StorageError};
use crate::limits::MAX_GROUP_EVENTS;
use crate::role::{Assignment, Change, RoleState};
use crate::store::{Entry, SnapshotFile};

/// A reply to whoever submitted a job.
pub(super) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// What the writer thread is asked to do.
pub(super) enum Job {
    /// A client write.
    Event(Event, Reply<Committed>),
    /// Entries streamed from the leader, in order.
    Replicate(Vec<Entry>, Reply<u64>),
    /// A snapshot of the state after every write queued before it.
    Snapshot(Reply<SnapshotFile>),
    /// The state to install, the verified snapshot file it came from (renamed into place), and
    /// the epoch of the leader whose history it is, when known.
    Restore(
        Box<Kernel>,
        PathBuf,
        InstallMode,
        Option<u64>,
        Reply<SnapshotFile>,
    ),
    /// A new role, from the arbiter that named itself: ordered with writes, so a write either
    /// commits before it or is refused.
    SetRole(Assignment, Option<String>, Reply<RoleState>),
    /// An epoch heard of, from the arbiter that named itself: ordered with writes as a role is
    /// (a fence takes effect between groups, never inside one).
    ObserveEpoch(u64, Option<String>, Reply<bool>),
    /// Makes the writer panic (tests of what the node does when its writer dies).
    #[cfg(test)]
    Panic,
    /// Bytes of rows that the back copy, the published copy and the given states hold between
    /// them ([`Kernel::held_bytes`]; tests of the copies' memory).
    #[cfg(test)]
    HeldBytes(Vec<std::sync::Arc<Kernel>>, Reply<u64>),
}

/// Client writes of one group, with their replies.
type Pending = Vec<(Event, Reply<Committed>)>;

/// The writer thread's body: runs jobs until every sender is gone.
pub(super) fn run(shared: &Shared, state: Kernel, rx: mpsc::Receiver<Job>) {
    // Indexing yields the cores to requests: reads never wait for a core behind a batch.
    let nice = shared.config.index_nice;
    lower_priority(nice);
    let mut copies = Copies {
        back: state,
        exec: Threads::with_start(shared.config.index_threads, move || lower_priority(nice)),
    };
    // Work since the writer last handed memory back.
    let mut worked = false;
    loop {
        let first = match rx.recv_timeout(IDLE_RELEASE) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if std::mem::take(&mut worked) {
                    valori_alloc::release_free_memory();
                }
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        worked = true;
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        // Group commit: everything already waiting joins this write, up to the limits in
        // events and bytes; any other job ends the group so it sees the group's effects.
        while let Some(job) = next.take() {
            match job {
                Job::Event(e, reply) => {
                    shared
                        .queued
                        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    bytes = bytes.saturating_add(encoded_len(&e));
                    events.push((e, reply));
                    if events.len() < MAX_GROUP_EVENTS && bytes < shared.config.max_group_bytes {
                        next = rx.try_recv().ok();
                    }
                }
                other => {
                    commit(shared, &mut copies, std::mem::take(&mut events));
                    between_groups(shared, &mut copies, other);
                }
            }
        }
        commit(shared, &mut copies, events);
        maybe_snapshot(shared, &copies.back);
    }
}

/// How long the writer waits idle after work before it hands freed memory back.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_millis(200);

/// Lowers the calling thread's scheduling priority to `nice` (Linux: per thread). Failing is
/// harmless: the thread keeps the process's priority.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread's own id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The length of an event's encoding, without encoding it.
pub(super) fn encoded_len(e: &Event) -> usize {
    struct Count(usize);
    impl valori_kernel::codec::Sink for Count {
        fn put(&mut self, bytes: &[u8]) {
            self.0 += bytes.len();
        }
    }
    let mut c = Count(0);
    e.encode_into(&mut c);
    c.0
}

/// Runs a job that is not a client write.
fn between_groups(shared: &Shared, copies: &mut Copies, job: Job) {
    match job {
        Job::Event(..) => unreachable!("events are grouped by the writer loop"),
        #[cfg(test)]
        Job::Panic => panic!("a test asked the writer to panic"),
        #[cfg(test)]
        Job::HeldBytes(others, reply) => {
            let published = shared.published.get();
            let mut states = vec![&copies.back, &*published];
            states.extend(others.iter().map(|k| &**k));
            let _ = reply.send(Ok(Kernel::held_bytes(&states)));
        }
        Job::Replicate(entries, reply) => {
            let _ = reply.send(replicate(shared, copies, entries));
        }
        Job::Snapshot(reply) => {
            let r = shared
                .health()
                .check()
                .and_then(|()| take_snapshot(shared, &copies.back));
            let _ = reply.send(r);
        }
        Job::Restore(kernel, path, mode, written_at, reply) => {
            let restored = restore(shared, copies, *kernel, &path, mode);
            if let (Ok(file), Some(epoch)) = (&restored, written_at) {
                // Not part of the restore's protocol: if a crash loses it, the epoch of the
                // history's last entry reads as unknown (0) until the next entry.
                if let Err(e) = shared.store.note_epoch(file.seq, epoch) {
                    tracing::warn!(error = %e, "recording the installed snapshot's epoch");
                }
            }
            let _ = reply.send(restored);
        }
        Job::SetRole(want, arbiter, reply) => {
            let _ = reply.send(set_role(shared, want, arbiter.as_deref()));
        }
        Job::ObserveEpoch(epoch, arbiter, reply) => {
            let _ = reply.send(observe_epoch(shared, epoch, arbiter.as_deref()));
        }
    }
}

/// Latches the failed state and rebuilds both copies from what is durable (the back copy may be
/// ahead of the disk); reads then serve the durable state, or are refused if the rebuild fails.
fn latch(shared: &Shared, copies: &mut Copies, why: Failure) {
    shared.fail(why.clone());
    shared
        .health
        .lock()
        .expect("health lock")
        .distrust_memory(why);
    match super::recover::recover(&shared.store, &shared.config, shared.vectors.as_ref()) {
        Ok(durable) => {
            tracing::warn!(seq = durable.seq(), "serving reads from the durable state");
            copies.install(&shared.published, &shared.metrics, durable);
            shared.health.lock().expect("health lock").rebuilt();
        }
        Err(e) => tracing::error!(error = %e, "rebuilding the durable state failed"),
    }
}

/// Applies a group of client writes to the back copy, appends the accepted events in one synced
/// write, publishes, answers, and brings the replaced copy up to date.
fn commit(shared: &Shared, copies: &mut Copies, events: Pending) {
    if events.is_empty() {
        return;
    }
    if let Some(why) = shared.health().failure() {
        for (_, reply) in events {
            let _ = reply.send(Err(NodeError::Failed(why.clone())));
        }
        return;
    }
    let role = shared.roles.get();
    if not_writable(&role).is_some() {
        for (_, reply) in events {
            let _ = reply.send(Err(not_writable(&role).expect("checked above")));
        }
        return;
    }
    let epoch = role.assignment.epoch;
    let started = Instant::now();
    let _span = tracing::info_span!("commit", events = events.len()).entered();
    // Readers keep reading the published copy meanwhile: nothing here takes a lock they use.
    let kernel = &mut copies.back;
    let first_seq = kernel.seq() + 1;
    let mut entries = Vec::new();
    let mut done: Recorded = Vec::new();
    let mut results = Vec::with_capacity(events.len());
    for (event, reply) in events {
        let encoded = event.encode();
        match kernel.apply_recorded(&event, &encoded, &copies.exec) {
            Ok((applied, replay)) => {
                let seq = kernel.seq();
                entries.push(Entry {
                    seq,
                    chain: kernel.chain_hash(),
                    event: encoded,
                    epoch,
                });
                done.push((event, replay));
                results.push((reply, Ok(Committed { seq, applied })));
            }
            Err(e) => results.push((reply, Err(NodeError::Kernel(e)))),
        }
    }
    if entries.is_empty() {
        for (reply, r) in results {
            let _ = reply.send(r);
        }
        return;
    }
    debug_assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == first_seq + i as u64),
        "a group's entries are consecutive from the back copy's next sequence number"
    );
    wait_at_gate(&shared.config);
    if let Err(e) = shared.store.append(&entries) {
        let doing = format!(
            "appending events {}..={}",
            entries[0].seq,
            entries[entries.len() - 1].seq
        );
        let failed = || StorageError::new(doing.clone(), e.clone());
        latch(shared, copies, Failure::Storage(failed().to_string()));
        for (reply, r) in results {
            let _ = reply.send(r.and(Err(failed().into())));
        }
        return;
    }
    shared.metrics.events_committed.inc_by(entries.len() as u64);
    let encoded: Vec<&[u8]> = entries.iter().map(|e| e.event.as_slice()).collect();
    let (old, fresh) = copies.swap(&shared.published, &shared.metrics);
    debug_assert_eq!(fresh.seq(), entries[entries.len() - 1].seq);
    shared
        .metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    // Answer first: the replay on the replaced copy is the writer's business.
    for (reply, r) in results {
        let _ = reply.send(r);
    }
    copies.back = reclaim(shared, old, &fresh, &done, &encoded);
}

/// Applies entries streamed from the leader (see [`super::Engine::replicate`]).
fn replicate(shared: &Shared, copies: &mut Copies, entries: Vec<Entry>) -> Result<u64, NodeError> {
    shared.health().check()?;
    if shared.roles.get().assignment.role != Role::Follower {
        // Promoted meanwhile: the node writes its own history now.
        return Err(NodeError::Internal(
            "replicated entries refused: this node is no longer a follower".into(),
        ));
    }
    let kernel = &mut copies.back;
    let mut accepted: Vec<Entry> = Vec::new();
    let mut done: Recorded = Vec::new();
    let mut divergence = None;
    for e in entries {
        if e.seq <= kernel.seq() {
            continue;
        }
        let expected = kernel.seq() + 1;
        let problem = if e.seq != expected {
            Some(format!("the leader sent sequence number {}", e.seq))
        } else {
            match Event::decode(&e.event) {
                Err(err) => Some(format!("the event does not decode: {err}")),
                Ok(event) => match kernel.apply_recorded(&event, &e.event, &copies.exec) {
                    Err(err) => Some(format!("the event does not apply here: {err}")),
                    Ok(_) if kernel.chain_hash() != e.chain => Some(format!(
                        "leader chain {}, ours {}",
                        hex::encode(e.chain),
                        hex::encode(kernel.chain_hash())
                    )),
                    Ok((_, replay)) => {
                        done.push((event, replay));
                        None
                    }
                },
            }
        };
        match problem {
            None => accepted.push(e),
            Some(why) => {
                divergence = Some(Failure::Diverged { seq: expected, why });
                break;
            }
        }
    }
    if !accepted.is_empty() {
        if let Err(e) = shared.store.append(&accepted) {
            let err = StorageError::new("appending replicated events", e);
            latch(shared, copies, Failure::Storage(err.to_string()));
            return Err(err.into());
        }
        shared
            .metrics
            .events_committed
            .inc_by(accepted.len() as u64);
    }
    if let Some(why) = divergence {
        shared.metrics.divergences.inc();
        // The back copy holds the refused event's effects: rebuild from the durable log.
        latch(shared, copies, why.clone());
        return Err(NodeError::Failed(why));
    }
    if !accepted.is_empty() {
        let encoded: Vec<&[u8]> = accepted.iter().map(|e| e.event.as_slice()).collect();
        let (old, fresh) = copies.swap(&shared.published, &shared.metrics);
        copies.back = reclaim(shared, old, &fresh, &done, &encoded);
    }
    Ok(copies.back.seq())
}

/// Applies a role request in the writer: decided, made durable, then in effect.
fn set_role(
    shared: &Shared,
    want: Assignment,
    arbiter: Option<&str>,
) -> Result<RoleState, NodeError> {
    let role = shared.roles.lock();
    role.check_claim(want.epoch, arbiter)?;
    if role.decide(&want)? == Change::Unchanged {
        return Ok(role.clone());
    }
    let next = role.apply(want, arbiter);
    tracing::info!(
        role = next.assignment.role.name(),
        epoch = next.assignment.epoch,
        leader = next.assignment.leader_url.as_deref().unwrap_or(""),
        "role changed"
    );
    shared
        .roles
        .persist_and_publish(&shared.store, &shared.metrics, role, next.clone())?;
    Ok(next)
}

/// Records a higher epoch in the writer: persisted, then in effect (see
/// [`super::Engine::observe_epoch`]).
fn observe_epoch(shared: &Shared, epoch: u64, arbiter: Option<&str>) -> Result<bool, NodeError> {
    let role = shared.roles.lock();
    role.check_claim(epoch, arbiter)?;
    let new = epoch > role.seen_epoch;
    let Some(next) = role.heard(epoch, arbiter) else {
        return Ok(false);
    };
    if new && next.fenced() {
        tracing::warn!(
            epoch = next.assignment.epoch,
            seen = epoch,
            "a newer leader exists: this leader is fenced and refuses writes"
        );
    }
    shared
        .roles
        .persist_and_publish(&shared.store, &shared.metrics, role, next)?;
    Ok(new)
}
