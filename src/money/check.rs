//! The ledger check: `sql/ledger_check.sql` returns one row per broken invariant. Tests, the
//! property test and `GET /v1/admin/ledger/check` run it.

use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;

const CHECK_SQL: &str = include_str!("../../sql/ledger_check.sql");

/// One broken invariant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow, PartialEq, Eq)]
pub struct Violation {
    /// `wallet_balance`, `wallet_chain`, `booking_split`, `booking_payment`, `booking_earnings`,
    /// `booking_platform`, `cancellation_money`, `tips` or `payout_lines`.
    pub check_name: String,
    pub subject: String,
    pub actual: String,
    pub expected: String,
}

pub async fn run(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Violation>> {
    sqlx::query_as(CHECK_SQL).fetch_all(db).await
}
