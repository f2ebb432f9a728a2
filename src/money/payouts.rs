//! Payouts: an admin runs one for a period; each therapist with positive net earnings in it
//! (seed §6.2, `sql/payout_earnings.sql`) gets one `payouts` row, their wallet is debited the
//! net, and the earning lines are marked paid so no later run pays them again. A payout is then
//! marked completed (with the bank's reference) or failed (the net returns to the wallet and its
//! lines to the next run).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ledger::{self, money_text, EntryKind, NewTransaction};
use super::{PaymentMethod, TransactionStatus, TransactionType};
use crate::error::{ApiError, Context as _};
use crate::notifications::{self, kind, Notice};

const EARNINGS_SQL: &str = include_str!("../../sql/payout_earnings.sql");
/// Serialises payout runs across nodes (a transaction-scoped advisory lock).
const PAYOUT_LOCK_KEY: i64 = 0x6869_6c6f_7470_6179;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PayoutView {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub provider_name: Option<String>,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub total_bookings: i32,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1800.00")]
    pub gross_earnings: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "240.00")]
    pub commission_amount: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1560.00")]
    pub net_payout: Decimal,
    /// `pending`, `processing`, `completed` or `failed`.
    pub status: String,
    pub reference_number: Option<String>,
    pub failure_reason: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

const VIEW_SQL: &str = "SELECT po.uuid AS id, p.uuid AS provider_id, \
        NULLIF(trim(COALESCE(u.first_name, '') || ' ' || COALESCE(u.last_name, '')), '') AS provider_name, \
        po.period_start, po.period_end, po.total_bookings, po.gross_earnings, po.commission_amount, po.net_payout, \
        po.status::text AS status, po.reference_number, po.failure_reason, po.processed_at, po.failed_at, po.created_at \
     FROM payouts po JOIN providers p ON p.id = po.provider_id JOIN users u ON u.id = p.user_id";

/// A therapist the run left out, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SkippedPayout {
    pub provider_id: Uuid,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutRun {
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    /// Payouts this run created (none when the period was already paid out).
    pub created: Vec<PayoutView>,
    pub skipped: Vec<SkippedPayout>,
}

#[derive(sqlx::FromRow)]
struct Earnings {
    provider_id: i64,
    user_id: i64,
    total_bookings: i32,
    gross_earnings: Decimal,
    total_commission: Decimal,
    net_earnings: Decimal,
    line_ids: Vec<i64>,
    balance: Decimal,
}

/// Runs a payout for `[start, end]` (dates, both included). Running it again is harmless.
pub async fn run(db: &PgPool, start: NaiveDate, end: NaiveDate) -> Result<PayoutRun, ApiError> {
    let mut tx = db.begin().await.context("starting the payout run")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PAYOUT_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .context("locking payout runs")?;
    let earnings: Vec<Earnings> = sqlx::query_as(EARNINGS_SQL)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *tx)
        .await
        .context("computing earnings")?;
    let mut created_ids = Vec::new();
    let mut skipped = Vec::new();
    for e in earnings {
        let provider_uuid: Uuid = sqlx::query_scalar("SELECT uuid FROM providers WHERE id = $1")
            .bind(e.provider_id)
            .fetch_one(&mut *tx)
            .await
            .context("reading the provider")?;
        if e.net_earnings <= Decimal::ZERO {
            skipped.push(SkippedPayout {
                provider_id: provider_uuid,
                reason: format!(
                    "net earnings of {} in the period (cash collected exceeds earnings)",
                    money_text(e.net_earnings)
                ),
            });
            continue;
        }
        if e.balance < e.net_earnings {
            skipped.push(SkippedPayout {
                provider_id: provider_uuid,
                reason: format!(
                    "the wallet holds {}, less than the period's net {} (cash owed from other periods)",
                    money_text(e.balance),
                    money_text(e.net_earnings)
                ),
            });
            continue;
        }
        let (payout_id, payout_uuid): (i64, Uuid) = sqlx::query_as(
            "INSERT INTO payouts (provider_id, period_start, period_end, gross_earnings, commission_amount, \
                 net_payout, status, total_bookings) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) RETURNING id, uuid",
        )
        .bind(e.provider_id)
        .bind(start)
        .bind(end)
        .bind(e.gross_earnings)
        .bind(e.total_commission)
        .bind(e.net_earnings)
        .bind(e.total_bookings)
        .fetch_one(&mut *tx)
        .await
        .context("creating the payout")?;
        sqlx::query("UPDATE wallet_transactions SET payout_id = $2 WHERE id = ANY($1)")
            .bind(&e.line_ids)
            .bind(payout_id)
            .execute(&mut *tx)
            .await
            .context("marking the lines paid")?;
        let mut t = NewTransaction::new(
            TransactionType::Payout,
            e.user_id,
            PaymentMethod::Wallet,
            e.net_earnings,
            TransactionStatus::Pending,
            format!("Payout for {start} to {end}"),
        );
        t.metadata = json!({"payout_id": payout_uuid});
        let (transaction, _) = ledger::record(&mut tx, &t)
            .await
            .context("recording the payout")?;
        ledger::post(
            &mut tx,
            e.user_id,
            EntryKind::Payout,
            e.net_earnings,
            Some(transaction),
            None,
            &format!("Payout for {start} to {end}"),
        )
        .await?;
        sqlx::query("UPDATE wallet_transactions SET payout_id = $2 WHERE reference_id = $1 AND entry_kind = 'payout'")
            .bind(transaction)
            .bind(payout_id)
            .execute(&mut *tx)
            .await
            .context("linking the payout line")?;
        notifications::notify(
            &mut tx,
            Notice {
                user_id: e.user_id,
                kind: kind::PAYOUT,
                title: "Payout on its way".into(),
                body: format!(
                    "₱{} for {start} to {end} is being sent to your bank",
                    money_text(e.net_earnings)
                ),
                action_type: Some("open_wallet"),
                action_data: json!({"payout_id": payout_uuid}),
                booking_id: None,
            },
        )
        .await
        .context("notifying the therapist")?;
        crate::webhooks::emit(
            &mut tx,
            "payout.created",
            json!({"payout_id": payout_uuid, "provider_id": provider_uuid, "net_payout": money_text(e.net_earnings),
                   "period_start": start, "period_end": end}),
        )
        .await
        .context("queueing the webhook")?;
        created_ids.push(payout_id);
    }
    let created = if created_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(&format!("{VIEW_SQL} WHERE po.id = ANY($1) ORDER BY po.id"))
            .bind(&created_ids)
            .fetch_all(&mut *tx)
            .await
            .context("loading the payouts")?
    };
    tx.commit().await.context("committing the payout run")?;
    metrics::counter!("hilot_payouts_created_total").increment(created.len() as u64);
    Ok(PayoutRun {
        period_start: start,
        period_end: end,
        created,
        skipped,
    })
}

pub async fn list(
    db: impl PgExecutor<'_>,
    status: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<PayoutView>> {
    sqlx::query_as(&format!(
        "{VIEW_SQL} WHERE ($1::text IS NULL OR po.status::text = $1) ORDER BY po.id DESC LIMIT $2"
    ))
    .bind(status)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks a pending payout completed (the bank paid it) or failed (the net goes back to the
/// wallet, and its lines to the next run).
pub async fn settle(
    db: &PgPool,
    payout: Uuid,
    completed: bool,
    reference_number: Option<&str>,
    failure_reason: Option<&str>,
) -> Result<PayoutView, ApiError> {
    let mut tx = db.begin().await.context("starting the payout change")?;
    let row: Option<(i64, String, Decimal, i64, Uuid)> = sqlx::query_as(
        "SELECT po.id, po.status::text, po.net_payout, p.user_id, p.uuid FROM payouts po \
         JOIN providers p ON p.id = po.provider_id WHERE po.uuid = $1 FOR UPDATE OF po",
    )
    .bind(payout)
    .fetch_optional(&mut *tx)
    .await
    .context("loading the payout")?;
    let (id, status, net, user_id, provider_uuid) =
        row.ok_or_else(|| ApiError::not_found("payout"))?;
    if !matches!(status.as_str(), "pending" | "processing") {
        return Err(ApiError::Conflict(format!(
            "the payout is already {status}"
        )));
    }
    let transaction: Option<i64> = sqlx::query_scalar(
        "SELECT reference_id FROM wallet_transactions WHERE payout_id = $1 AND entry_kind = 'payout'",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .context("finding the payout line")?
    .flatten();
    if completed {
        sqlx::query("UPDATE payouts SET status = 'completed', processed_at = now(), reference_number = $2 WHERE id = $1")
            .bind(id)
            .bind(reference_number)
            .execute(&mut *tx)
            .await
            .context("completing the payout")?;
        sqlx::query(
            "UPDATE transactions SET status = 'completed', processed_at = now() WHERE id = $1",
        )
        .bind(transaction)
        .execute(&mut *tx)
        .await
        .context("completing the payout transaction")?;
    } else {
        let reason = failure_reason.unwrap_or("the bank refused the transfer");
        sqlx::query("UPDATE payouts SET status = 'failed', failed_at = now(), failure_reason = $2 WHERE id = $1")
            .bind(id)
            .bind(reason)
            .execute(&mut *tx)
            .await
            .context("failing the payout")?;
        sqlx::query("UPDATE transactions SET status = 'failed', failed_at = now(), failure_reason = $2 WHERE id = $1")
            .bind(transaction)
            .bind(reason)
            .execute(&mut *tx)
            .await
            .context("failing the payout transaction")?;
        ledger::post(
            &mut tx,
            user_id,
            EntryKind::PayoutReversal,
            net,
            transaction,
            None,
            "Payout failed: returned to the wallet",
        )
        .await?;
        sqlx::query(
            "UPDATE wallet_transactions SET payout_id = NULL WHERE payout_id = $1 \
             AND entry_kind IN ('earnings', 'tip_received', 'cash_collected', 'cancellation_compensation')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("returning the lines to the next run")?;
    }
    let event = if completed {
        "payout.completed"
    } else {
        "payout.failed"
    };
    notifications::notify(
        &mut tx,
        Notice {
            user_id,
            kind: kind::PAYOUT,
            title: if completed {
                "Payout sent".into()
            } else {
                "Payout failed".into()
            },
            body: if completed {
                format!("₱{} was sent to your bank", money_text(net))
            } else {
                format!(
                    "₱{} could not be sent and is back in your wallet",
                    money_text(net)
                )
            },
            action_type: Some("open_wallet"),
            action_data: json!({"payout_id": payout}),
            booking_id: None,
        },
    )
    .await
    .context("notifying the therapist")?;
    crate::webhooks::emit(
        &mut tx,
        event,
        json!({"payout_id": payout, "provider_id": provider_uuid, "net_payout": money_text(net)}),
    )
    .await
    .context("queueing the webhook")?;
    let view = sqlx::query_as(&format!("{VIEW_SQL} WHERE po.id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .context("loading the payout")?;
    tx.commit().await.context("committing the payout change")?;
    Ok(view)
}

/// For tests and the property test: the unpaid net of a therapist.
pub async fn unpaid_net(tx: &mut PgConnection, user_id: i64) -> sqlx::Result<Decimal> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(CASE WHEN l.type = 'credit' THEN l.amount ELSE -l.amount END), 0) \
         FROM wallet_transactions l JOIN wallets w ON w.id = l.wallet_id \
         WHERE w.user_id = $1 AND l.payout_id IS NULL \
           AND l.entry_kind IN ('earnings', 'tip_received', 'cash_collected', 'cancellation_compensation')",
    )
    .bind(user_id)
    .fetch_one(tx)
    .await
}
