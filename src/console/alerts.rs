//! Alerts for dispatchers: bookings waiting too long, therapists silent during an active
//! booking (a lone worker's safety), sessions running past their duration plus a margin,
//! therapists who have not set out for a home visit whose start has passed.
//!
//! The database is the source (every node sees the same), read every watch interval; what
//! changed since the last look is pushed to the dashboards as `alert` frames.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Context as _};
use crate::providers::setting_as_f64;

/// `alerts.pending_wait_s`: a booking pending longer than this needs a dispatcher.
pub const DEFAULT_PENDING_WAIT: Duration = Duration::from_secs(120);
/// `alerts.silent_s`: a therapist on a booking without a fix for this long.
pub const DEFAULT_SILENT: Duration = Duration::from_secs(90);
/// `alerts.overrun_margin_s`: a session this far past its duration.
pub const DEFAULT_OVERRUN_MARGIN: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSettings {
    pub pending_wait: Duration,
    pub silent: Duration,
    pub overrun_margin: Duration,
}

impl AlertSettings {
    /// The thresholds from app_settings `alerts`; a missing or malformed one takes its default.
    pub async fn load(db: &PgPool) -> Self {
        let value: Option<Value> =
            sqlx::query_scalar("SELECT value FROM app_settings WHERE key = 'alerts'")
                .fetch_optional(db)
                .await
                .ok()
                .flatten();
        let seconds = |name: &str, default: Duration| {
            value
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(setting_as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(default, |s| Duration::from_secs_f64(s.min(86_400.0)))
        };
        Self {
            pending_wait: seconds("pending_wait_s", DEFAULT_PENDING_WAIT),
            silent: seconds("silent_s", DEFAULT_SILENT),
            overrun_margin: seconds("overrun_margin_s", DEFAULT_OVERRUN_MARGIN),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    BookingWaiting,
    TherapistSilent,
    SessionOverrun,
    TherapistLate,
}

impl AlertKind {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "booking_waiting" => Some(Self::BookingWaiting),
            "therapist_silent" => Some(Self::TherapistSilent),
            "session_overrun" => Some(Self::SessionOverrun),
            "therapist_late" => Some(Self::TherapistLate),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::BookingWaiting => "booking_waiting",
            Self::TherapistSilent => "therapist_silent",
            Self::SessionOverrun => "session_overrun",
            Self::TherapistLate => "therapist_late",
        }
    }
}

/// One alert. `id` stays the same while the condition lasts, so clients can replace it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Alert {
    /// `<kind>:<booking id>`.
    pub id: String,
    pub kind: AlertKind,
    /// `critical` for a silent therapist (a lone worker's safety), `warning` otherwise.
    pub severity: &'static str,
    pub booking_id: Uuid,
    pub booking_number: String,
    /// `home_service` or `in_store`.
    pub place: String,
    pub status: String,
    pub provider_id: Option<Uuid>,
    pub provider_name: Option<String>,
    /// When the condition began: requested, last heard from, due to end, or due to start.
    pub since: DateTime<Utc>,
    /// What a dispatcher reads.
    pub detail: String,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    kind: String,
    booking_id: Uuid,
    booking_number: String,
    place: String,
    status: String,
    provider_id: Option<Uuid>,
    provider_name: Option<String>,
    since: DateTime<Utc>,
    lat: Option<f64>,
    lng: Option<f64>,
    store_name: Option<String>,
}

fn minutes(d: chrono::Duration) -> i64 {
    d.num_minutes().max(0)
}

fn into_alert(row: AlertRow, now: DateTime<Utc>) -> Option<Alert> {
    let kind = AlertKind::parse(&row.kind)?;
    let age = now - row.since;
    let detail = match kind {
        AlertKind::BookingWaiting => match &row.store_name {
            Some(store) => format!(
                "{} has waited {} min for {store} to confirm",
                row.booking_number,
                minutes(age)
            ),
            None => format!(
                "{} has waited {} min with no therapist",
                row.booking_number,
                minutes(age)
            ),
        },
        AlertKind::TherapistSilent => format!(
            "{} has sent no position for {} s while {} on {}",
            row.provider_name.as_deref().unwrap_or("the therapist"),
            age.num_seconds().max(0),
            row.status.replace('_', " "),
            row.booking_number
        ),
        AlertKind::SessionOverrun => format!(
            "{} is {} min past its scheduled end",
            row.booking_number,
            minutes(age)
        ),
        AlertKind::TherapistLate => format!(
            "{} has not set out for {}, which started {} min ago",
            row.provider_name.as_deref().unwrap_or("the therapist"),
            row.booking_number,
            minutes(age)
        ),
    };
    Some(Alert {
        id: format!("{}:{}", kind.as_str(), row.booking_id),
        kind,
        severity: if kind == AlertKind::TherapistSilent {
            "critical"
        } else {
            "warning"
        },
        booking_id: row.booking_id,
        booking_number: row.booking_number,
        place: row.place,
        status: row.status,
        provider_id: row.provider_id,
        provider_name: row.provider_name,
        since: row.since,
        detail,
        lat: row.lat,
        lng: row.lng,
    })
}

/// Every alert now, oldest condition first.
pub async fn current(db: &PgPool) -> Result<Vec<Alert>, ApiError> {
    let settings = AlertSettings::load(db).await;
    let rows: Vec<AlertRow> = sqlx::query_as(include_str!("../../sql/console_alerts.sql"))
        .bind(settings.pending_wait.as_secs_f64())
        .bind(settings.silent.as_secs_f64())
        .bind(settings.overrun_margin.as_secs_f64())
        .fetch_all(db)
        .await
        .context("reading alerts")?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .filter_map(|row| into_alert(row, now))
        .collect())
}

/// The `alert` frames that take a dashboard from `before` to `after`: `raised` for a new
/// alert, `cleared` for one that ended. An alert whose words changed (its age) is not raised
/// again. Pure.
pub fn changes(before: &BTreeMap<String, Alert>, after: &BTreeMap<String, Alert>) -> Vec<Value> {
    let mut frames = Vec::new();
    for (id, alert) in after {
        if !before.contains_key(id) {
            let mut frame = json!(alert);
            frame["type"] = json!("alert");
            frame["state"] = json!("raised");
            frames.push(frame);
        }
    }
    for (id, alert) in before {
        if !after.contains_key(id) {
            frames.push(json!({
                "type": "alert",
                "state": "cleared",
                "id": id,
                "kind": alert.kind,
                "booking_id": alert.booking_id,
            }));
        }
    }
    frames
}

/// Looks for alerts every `every` while `wanted()` says someone listens, handing each change
/// to `send` as an `alert` frame, until shutdown.
pub async fn watch<W, S>(
    db: PgPool,
    every: Duration,
    wanted: W,
    send: S,
    mut shutdown: watch::Receiver<bool>,
) where
    W: Fn() -> bool,
    S: Fn(Value),
{
    let mut known: BTreeMap<String, Alert> = BTreeMap::new();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !wanted() {
            // Nobody to tell: the next dashboard fetches the list when it connects.
            known.clear();
            continue;
        }
        match current(&db).await {
            Ok(alerts) => {
                let now: BTreeMap<String, Alert> =
                    alerts.into_iter().map(|a| (a.id.clone(), a)).collect();
                metrics::gauge!("hilot_console_alerts").set(now.len() as f64);
                for frame in changes(&known, &now) {
                    send(frame);
                }
                known = now;
            }
            Err(error) => tracing::warn!(error = %error, "reading alerts failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> Alert {
        Alert {
            id: id.into(),
            kind: AlertKind::BookingWaiting,
            severity: "warning",
            booking_id: Uuid::nil(),
            booking_number: "SPC-2026-000001".into(),
            place: "home_service".into(),
            status: "pending".into(),
            provider_id: None,
            provider_name: None,
            since: Utc::now(),
            detail: "waiting".into(),
            lat: None,
            lng: None,
        }
    }

    #[test]
    fn new_alerts_are_raised_once_and_ended_ones_cleared() {
        let a: BTreeMap<_, _> = [("a".to_owned(), alert("a"))].into();
        let mut b = a.clone();
        b.insert("b".into(), alert("b"));
        let raised = changes(&a, &b);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0]["state"], "raised");
        assert_eq!(raised[0]["id"], "b");
        assert_eq!(raised[0]["type"], "alert");
        // The same alert with new words (its age) is not raised again.
        let mut older = b.clone();
        older.get_mut("a").unwrap().detail = "waiting longer".into();
        assert!(changes(&b, &older).is_empty());
        let cleared = changes(&b, &a);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0]["state"], "cleared");
        assert_eq!(cleared[0]["id"], "b");
    }
}
