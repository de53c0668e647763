//! Backups and restores as the operator decides about them: when `spec.backup.schedule` is
//! due, the status from the leader's `GET /v1/backups`, the `BackedUp` condition, what a
//! restore Job's end says, and when a restored cluster may have its first leader. Pure
//! functions; the controller calls the leader and reads the Job (`controller/act.rs`,
//! `controller/restore.rs`).

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::JobStatus;
use valori_api as api;

use crate::crd::{BackupStatus, RestoreStatus};

/// What became of a restore Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// Still running (or retrying).
    Running,
    /// Restored: the status to record.
    Restored(RestoreStatus),
    /// Failed for good: why.
    Failed(String),
}

/// The longest failure message kept (a Kubernetes termination message holds 4096 bytes).
const MAX_MESSAGE: usize = 1024;

/// The restore's outcome from its Job's status and the termination message of its last pod:
/// the JSON line `valori-node restore --report` writes, or with no report the end of the
/// container's log (`FallbackToLogsOnError`).
pub fn restore_outcome(
    job: Option<&JobStatus>,
    message: Option<&str>,
    destination: &str,
) -> RestoreOutcome {
    let condition = |type_: &str| {
        job.and_then(|j| j.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    };
    let report: Option<serde_json::Value> = message
        .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
        .and_then(|l| serde_json::from_str(l.trim()).ok());
    if condition("Failed") {
        let why = match (&report, message) {
            (Some(r), _) if r["error"].is_string() => r["error"].as_str().unwrap_or("").into(),
            (_, Some(m)) if !m.trim().is_empty() => {
                let m = m.trim();
                let start = m.len().saturating_sub(MAX_MESSAGE);
                let start = (start..m.len())
                    .find(|&i| m.is_char_boundary(i))
                    .unwrap_or(0);
                m[start..].to_string()
            }
            _ => "the restore Job failed without a report (see its pod's log)".into(),
        };
        return RestoreOutcome::Failed(why);
    }
    if !condition("Complete") {
        return RestoreOutcome::Running;
    }
    let hash = |r: &serde_json::Value, k: &str| r[k].as_str().map(str::to_string);
    match report.filter(|r| r["seq"].is_u64()) {
        Some(r) => RestoreOutcome::Restored(RestoreStatus {
            phase: "Restored".into(),
            destination: destination.into(),
            seq: r["seq"].as_u64(),
            chain_hash: hash(&r, "chain_hash"),
            state_hash: hash(&r, "state_hash"),
            snapshot_seq: r["snapshot_seq"].as_u64(),
            replayed: r["replayed"].as_u64(),
            message: None,
        }),
        None => RestoreOutcome::Failed(
            "the restore Job completed without a report of what it restored; delete the \
             Job and the first pod's claim to restore again"
                .into(),
        ),
    }
}

/// Whether a restored cluster may take `pod`, the pod the bootstrap would promote, at `seq`
/// as its first leader: only the restored pod (`first`), and only serving exactly the
/// restored sequence number. `Err` says why not.
pub fn restored_leader(pod: &str, seq: u64, first: &str, restored: u64) -> Result<(), String> {
    if pod != first {
        return Err(format!(
            "waiting for {first}, restored to sequence number {restored}, to answer before \
             choosing the first leader"
        ));
    }
    if seq != restored {
        return Err(format!(
            "{first} serves sequence number {seq}, not the {restored} its restore reported: it \
             is not made the leader"
        ));
    }
    Ok(())
}

/// Parses a schedule: a cron expression (five fields; a sixth, seconds, first, is allowed).
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    schedule
        .parse::<croner::Cron>()
        .map_err(|e| format!("spec.backup.schedule {schedule:?} is not a cron expression: {e}"))
}

/// Whether `schedule` fired after `last` and at or before `now` (both UTC).
pub fn schedule_due(schedule: &str, last: Timestamp, now: Timestamp) -> Result<bool, String> {
    let cron = parse_schedule(schedule)?;
    let now = now.to_zoned(jiff::tz::TimeZone::UTC);
    Ok(cron
        .find_previous_occurrence(&now, true)
        .is_ok_and(|fired| fired.timestamp() > last))
}

/// The status of a cluster's backups from its leader's answer; `last_scheduled` is kept from
/// the previous status (the operator's own record).
pub fn status_of(list: &api::BackupList, last_scheduled: Option<String>) -> BackupStatus {
    let newest = list.backups.last();
    BackupStatus {
        last_backup_seq: newest.map(|b| b.seq),
        last_backup_time: newest.map(|b| b.finished.clone()),
        last_backup_state_hash: newest.map(|b| b.state_hash.clone()),
        backups: list.backups.len() as u32,
        reaches: list.reaches,
        shipped_through: list.shipping.shipped_through,
        ship_lag_events: list.shipping.lag_events,
        last_scheduled,
        error: list
            .shipping
            .error
            .clone()
            .or_else(|| list.last_error.clone()),
    }
}

/// The `BackedUp` condition: whether the cluster is backed up, why, and what it says.
pub fn condition(st: &BackupStatus, shipping: bool) -> (bool, &'static str, String) {
    if let Some(e) = &st.error {
        return (false, "BackupFailing", e.clone());
    }
    if shipping && st.shipped_through.is_none() {
        return (
            false,
            "NotShippedYet",
            "the leader has not shipped its log yet".into(),
        );
    }
    if !shipping && st.backups == 0 {
        return (
            false,
            "NoBackupYet",
            "no snapshot in the destination yet (log shipping is off)".into(),
        );
    }
    (
        true,
        "BackedUp",
        format!(
            "{} snapshots in the destination; a restore reaches sequence number {}{}",
            st.backups,
            st.reaches,
            match (st.shipped_through, st.ship_lag_events) {
                (Some(s), Some(lag)) => format!("; log shipped through {s} ({lag} events behind)"),
                _ => String::new(),
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobCondition;

    fn job(condition: Option<&str>) -> JobStatus {
        JobStatus {
            conditions: condition.map(|c| {
                vec![JobCondition {
                    type_: c.into(),
                    status: "True".into(),
                    ..JobCondition::default()
                }]
            }),
            ..JobStatus::default()
        }
    }

    #[test]
    fn a_restore_job_s_end_is_read_from_its_report() {
        let d = "s3://b/p";
        assert_eq!(restore_outcome(None, None, d), RestoreOutcome::Running);
        assert_eq!(
            restore_outcome(Some(&job(None)), None, d),
            RestoreOutcome::Running
        );
        let report = r#"{"seq":42,"chain_hash":"aa","state_hash":"bb","snapshot_seq":30,"replayed":12,"segments":2}"#;
        let RestoreOutcome::Restored(st) =
            restore_outcome(Some(&job(Some("Complete"))), Some(report), d)
        else {
            panic!("restored")
        };
        assert_eq!(
            (st.phase.as_str(), st.seq, st.snapshot_seq, st.replayed),
            ("Restored", Some(42), Some(30), Some(12))
        );
        assert_eq!(
            (st.chain_hash.as_deref(), st.state_hash.as_deref()),
            (Some("aa"), Some("bb"))
        );
        assert_eq!(st.destination, d);
        // Completed without a report: not trusted.
        assert!(matches!(
            restore_outcome(Some(&job(Some("Complete"))), Some("done\n"), d),
            RestoreOutcome::Failed(m) if m.contains("without a report")
        ));
        // Failed: the report's error, else the log's end, else a pointer to the log.
        let failed = Some(job(Some("Failed")));
        let err = r#"{"error":"the backup's log has a gap: sequence number 17 is in no segment"}"#;
        assert_eq!(
            restore_outcome(failed.as_ref(), Some(err), d),
            RestoreOutcome::Failed(
                "the backup's log has a gap: sequence number 17 is in no segment".into()
            )
        );
        let log = format!("{}\npanicked: out of disk\n", "x".repeat(5000));
        let RestoreOutcome::Failed(m) = restore_outcome(failed.as_ref(), Some(&log), d) else {
            panic!("failed")
        };
        assert!(m.ends_with("out of disk") && m.len() <= MAX_MESSAGE, "{m}");
        assert!(matches!(
            restore_outcome(failed.as_ref(), None, d),
            RestoreOutcome::Failed(m) if m.contains("without a report")
        ));
    }

    #[test]
    fn only_the_restored_pod_at_its_restored_seq_becomes_the_first_leader() {
        assert_eq!(restored_leader("vc-0", 42, "vc-0", 42), Ok(()));
        let e = restored_leader("vc-1", 0, "vc-0", 42).unwrap_err();
        assert!(e.contains("waiting for vc-0"), "{e}");
        let e = restored_leader("vc-0", 40, "vc-0", 42).unwrap_err();
        assert!(e.contains("serves sequence number 40, not the 42"), "{e}");
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_schedule_is_due_once_per_firing() {
        let daily = "0 3 * * *";
        let last = at("2026-12-05T03:00:00Z");
        assert!(!schedule_due(daily, last, at("2026-12-05T10:00:00Z")).unwrap());
        assert!(!schedule_due(daily, last, at("2026-12-06T02:59:59Z")).unwrap());
        assert!(schedule_due(daily, last, at("2026-12-06T03:00:00Z")).unwrap());
        assert!(schedule_due(daily, last, at("2026-12-06T09:30:00Z")).unwrap());
        // Asked at the firing, recorded then: not due again until the next.
        assert!(!schedule_due(
            daily,
            at("2026-12-06T03:00:00Z"),
            at("2026-12-06T09:30:00Z")
        )
        .unwrap());
        let every_minute = "* * * * *";
        assert!(schedule_due(
            every_minute,
            at("2026-12-06T03:00:10Z"),
            at("2026-12-06T03:01:00Z")
        )
        .unwrap());
        assert!(!schedule_due(
            every_minute,
            at("2026-12-06T03:00:10Z"),
            at("2026-12-06T03:00:59Z")
        )
        .unwrap());
        let err = schedule_due("every day", last, at("2026-12-06T03:00:00Z")).unwrap_err();
        assert!(err.contains("not a cron expression"), "{err}");
    }

    fn list(backups: &[u64], shipped: Option<u64>, error: Option<&str>) -> api::BackupList {
        api::BackupList {
            destination: "s3://b/p".into(),
            backups: backups
                .iter()
                .map(|&seq| api::BackupInfo {
                    seq,
                    chain_hash: "c".repeat(64),
                    state_hash: format!("{seq:064}"),
                    bytes: 10,
                    started: "2026-12-06T03:00:00Z".into(),
                    finished: format!("2026-12-06T03:00:{seq:02}Z"),
                })
                .collect(),
            reaches: shipped
                .unwrap_or(0)
                .max(backups.last().copied().unwrap_or(0)),
            shipping: api::LogShipping {
                enabled: true,
                interval_s: 10,
                shipped_through: shipped,
                lag_events: shipped.map(|_| 2),
                shipped_at: None,
                error: error.map(str::to_string),
            },
            last_error: None,
        }
    }

    #[test]
    fn the_status_and_condition_follow_the_leader_s_answer() {
        let st = status_of(&list(&[5, 9], Some(12), None), Some("t".into()));
        assert_eq!(st.last_backup_seq, Some(9));
        assert_eq!(st.last_backup_time.as_deref(), Some("2026-12-06T03:00:09Z"));
        assert_eq!(st.last_backup_state_hash, Some(format!("{:064}", 9)));
        assert_eq!(
            (st.backups, st.reaches, st.shipped_through),
            (2, 12, Some(12))
        );
        assert_eq!(st.ship_lag_events, Some(2));
        assert_eq!(st.last_scheduled.as_deref(), Some("t"));
        let (ok, reason, msg) = condition(&st, true);
        assert!(ok, "{msg}");
        assert_eq!(reason, "BackedUp");
        assert!(msg.contains("reaches sequence number 12"), "{msg}");

        let failing = status_of(&list(&[5], Some(7), Some("uploading: 403 Forbidden")), None);
        assert_eq!(
            condition(&failing, true),
            (
                false,
                "BackupFailing",
                "uploading: 403 Forbidden".to_string()
            )
        );
        let fresh = status_of(&list(&[], None, None), None);
        assert_eq!(condition(&fresh, true).1, "NotShippedYet");
        assert_eq!(condition(&fresh, false).1, "NoBackupYet");
    }
}
