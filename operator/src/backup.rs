//! Backups as the operator decides about them: when `spec.backup.schedule` is due, the status
//! from the leader's `GET /v1/backups`, and the `BackedUp` condition. Pure functions; the
//! controller calls the leader (`controller/act.rs`, `backups`).

use jiff::Timestamp;
use valori_api as api;

use crate::crd::BackupStatus;

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
