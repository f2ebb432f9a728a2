//! A property test: random sequences of bookings (cash and wallet, with promos and platform
//! fees), top-ups through the gateway's webhook path, acceptances, completions, cancellations
//! with fees and refunds, tips (some refused) and payouts (completed or failed) keep every ledger
//! invariant after every step. It runs against the real PostgreSQL, each case on its own
//! database, driving the same money code the server runs (the transition hook inside a
//! transaction that changes the status, as dispatch does).

use proptest::prelude::*;
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use hilot::money::gateway::{GatewayEvent, GatewayEventKind};
use hilot::money::ledger::{self, NewTransaction};
use hilot::money::payments::{self, Payments};
use hilot::money::{PaymentMethod, TransactionStatus, TransactionType};

const CUSTOMERS: usize = 2;
const THERAPISTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    TopUp {
        customer: usize,
        pesos: i64,
    },
    Book {
        customer: usize,
        wallet: bool,
        price: i64,
        promo: i64,
        fee: i64,
    },
    Accept {
        booking: usize,
        therapist: usize,
    },
    Complete {
        booking: usize,
    },
    Cancel {
        booking: usize,
        fee_percent: i64,
    },
    Tip {
        booking: usize,
        centavos: i64,
    },
    Payout,
    SettlePayout {
        completed: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..CUSTOMERS, 1..3000i64).prop_map(|(customer, pesos)| Op::TopUp { customer, pesos }),
        (
            0..CUSTOMERS,
            any::<bool>(),
            100..2000i64,
            0..300i64,
            0..60i64
        )
            .prop_map(|(customer, wallet, price, promo, fee)| Op::Book {
                customer,
                wallet,
                price,
                promo,
                fee
            }),
        (0..8usize, 0..THERAPISTS)
            .prop_map(|(booking, therapist)| Op::Accept { booking, therapist }),
        (0..8usize).prop_map(|booking| Op::Complete { booking }),
        (0..8usize, prop_oneof![Just(0i64), Just(50), Just(100)]).prop_map(
            |(booking, fee_percent)| Op::Cancel {
                booking,
                fee_percent
            }
        ),
        (0..8usize, -100..50_000i64).prop_map(|(booking, centavos)| Op::Tip { booking, centavos }),
        Just(Op::Payout),
        any::<bool>().prop_map(|completed| Op::SettlePayout { completed }),
    ]
}

struct World {
    db: PgPool,
    customers: Vec<i64>,
    therapists: Vec<(i64, i64)>,
    bookings: Vec<i64>,
    service: i64,
    intents: u64,
}

async fn world() -> World {
    let (_, url) = crate::helpers::fresh_database().await;
    let db = PgPoolOptions::new()
        .max_connections(3)
        .connect(&url)
        .await
        .unwrap();
    let mut customers = Vec::new();
    let mut therapists = Vec::new();
    for n in 0..CUSTOMERS + THERAPISTS {
        let user: i64 = sqlx::query_scalar(
            "INSERT INTO users (phone, first_name, last_name) VALUES ($1, 'Prop', 'Test') RETURNING id",
        )
        .bind(crate::helpers::next_phone())
        .fetch_one(&db)
        .await
        .unwrap();
        if n < CUSTOMERS {
            customers.push(user);
        } else {
            let provider: i64 = sqlx::query_scalar(
                "INSERT INTO providers (user_id, type, verification_status) VALUES ($1, 'therapist', 'verified') RETURNING id",
            )
            .bind(user)
            .fetch_one(&db)
            .await
            .unwrap();
            therapists.push((user, provider));
        }
    }
    let service = sqlx::query_scalar("SELECT id FROM services ORDER BY id LIMIT 1")
        .fetch_one(&db)
        .await
        .unwrap();
    World {
        db,
        customers,
        therapists,
        bookings: Vec::new(),
        service,
        intents: 0,
    }
}

/// Changes a booking's status and runs the transition hook in one transaction, as dispatch does.
async fn transition(db: &PgPool, booking: i64, from: &[&str], set: &str) -> bool {
    let mut tx = db.begin().await.unwrap();
    let changed = sqlx::query(&format!(
        "UPDATE bookings SET {set} WHERE id = $1 AND status::text = ANY($2)"
    ))
    .bind(booking)
    .bind(from)
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    if changed == 0 {
        return false;
    }
    match hilot::effects::on_booking_transition(&mut tx, booking).await {
        Ok(()) => {
            tx.commit().await.unwrap();
            true
        }
        Err(error) => panic!("a transition's money failed: {error}"),
    }
}

async fn apply(world: &mut World, op: &Op) {
    let db = world.db.clone();
    let today = chrono::Utc::now().date_naive();
    match *op {
        Op::TopUp { customer, pesos } => {
            world.intents += 1;
            let intent = format!("pi_prop_{}", world.intents);
            let mut conn = db.acquire().await.unwrap();
            let mut t = NewTransaction::new(
                TransactionType::WalletTopup,
                world.customers[customer],
                PaymentMethod::Gcash,
                Decimal::from(pesos),
                TransactionStatus::Pending,
                "Wallet top-up",
            );
            t.gateway = Some("fake".into());
            t.gateway_id = Some(intent.clone());
            ledger::record(&mut conn, &t).await.unwrap();
            drop(conn);
            let event = GatewayEvent {
                event_id: format!("evt_{intent}"),
                signed_at: 1,
                kind: GatewayEventKind::PaymentPaid {
                    intent_id: intent,
                    payment_id: "pay_prop".into(),
                    amount: Decimal::from(pesos),
                    raw: serde_json::json!({}),
                },
            };
            payments::apply_event(&db, "fake", &event).await.unwrap();
        }
        Op::Book {
            customer,
            wallet,
            price,
            promo,
            fee,
        } => {
            let price = Decimal::from(price);
            let promo = Decimal::from(promo).min(price);
            let fee = Decimal::from(fee);
            let commission =
                hilot::domain::money::round_money(price * Decimal::from(15) / Decimal::ONE_HUNDRED);
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO bookings (customer_id, service_id, type, booking_type, status, service_price, platform_fee, \
                     promo_discount, total_amount, provider_earnings, commission_amount, commission_rate, payment_method) \
                 VALUES ($1, $2, 'home_service', 'now', 'pending', $3, $4, $5, $6, $7, $8, 15, $9) RETURNING id",
            )
            .bind(world.customers[customer])
            .bind(world.service)
            .bind(price)
            .bind(fee)
            .bind(promo)
            .bind(price + fee - promo)
            .bind(price - commission)
            .bind(commission)
            .bind(if wallet { PaymentMethod::Wallet } else { PaymentMethod::Cash })
            .fetch_one(&db)
            .await
            .unwrap();
            world.bookings.push(id);
        }
        Op::Accept { booking, therapist } => {
            let Some(&id) = world.bookings.get(booking) else {
                return;
            };
            let (_, provider) = world.therapists[therapist];
            // One active booking per therapist (the unique index): skip when busy.
            let busy: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM bookings WHERE provider_id = $1 AND status IN ('accepted','en_route','arrived','in_progress'))",
            )
            .bind(provider)
            .fetch_one(&db)
            .await
            .unwrap();
            if !busy {
                transition(
                    &db,
                    id,
                    &["pending"],
                    &format!("status = 'accepted', provider_id = {provider}, accepted_at = now()"),
                )
                .await;
            }
        }
        Op::Complete { booking } => {
            let Some(&id) = world.bookings.get(booking) else {
                return;
            };
            transition(
                &db,
                id,
                &["accepted"],
                "status = 'completed', completed_at = now()",
            )
            .await;
        }
        Op::Cancel {
            booking,
            fee_percent,
        } => {
            let Some(&id) = world.bookings.get(booking) else {
                return;
            };
            // Free while pending; after acceptance the fee is the policy's share of the total.
            let set = format!(
                "status = 'cancelled', cancelled_at = now(), cancellation_reason = 'prop', \
                 cancellation_fee = CASE WHEN status = 'pending' THEN 0 ELSE round(total_amount * {fee_percent} / 100.0, 2) END"
            );
            transition(&db, id, &["pending", "accepted"], &set).await;
        }
        Op::Tip { booking, centavos } => {
            let Some(&id) = world.bookings.get(booking) else {
                return;
            };
            let customer: i64 =
                sqlx::query_scalar("SELECT customer_id FROM bookings WHERE id = $1")
                    .bind(id)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            // Refused tips (not completed, zero, too large, wallet short) must move nothing.
            let _ = hilot::money::tips::tip(
                &db,
                &Payments::default(),
                id,
                customer,
                Decimal::new(centavos, 2),
                PaymentMethod::Wallet,
                None,
            )
            .await;
        }
        Op::Payout => {
            hilot::money::payouts::run(&db, today - chrono::Duration::days(1), today)
                .await
                .unwrap();
        }
        Op::SettlePayout { completed } => {
            let pending: Option<uuid::Uuid> = sqlx::query_scalar(
                "SELECT uuid FROM payouts WHERE status = 'pending' ORDER BY id LIMIT 1",
            )
            .fetch_optional(&db)
            .await
            .unwrap();
            if let Some(payout) = pending {
                hilot::money::payouts::settle(&db, payout, completed, Some("REF"), None)
                    .await
                    .unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_sequence_keeps_the_ledger_invariant(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut world = world().await;
            for (step, op) in ops.iter().enumerate() {
                apply(&mut world, op).await;
                let violations = hilot::money::check::run(&world.db).await.unwrap();
                assert!(violations.is_empty(), "after step {step} ({op:?}) of {ops:?}: {violations:#?}");
            }
            // Only the documented rules take a wallet below zero: cash owed by a therapist, or an
            // unpaid cancellation fee on a customer's.
            let negative: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM wallet_transactions WHERE balance_after < 0 AND type = 'debit' \
                 AND entry_kind NOT IN ('cash_collected', 'cancellation_fee')",
            )
            .fetch_one(&world.db)
            .await
            .unwrap();
            assert_eq!(negative, 0, "a wallet went negative outside the documented rules");
            world.db.close().await;
        });
    }
}
