-- Hilot schema, part 14: the ledger, payments through a gateway, payouts, review moderation ids,
-- notifications delivery and operator webhooks (seed sections 3.5-3.7 put to work).

-- ---------------------------------------------------------------------------
-- Payment method of a booking
-- ---------------------------------------------------------------------------
-- departs from seed: addition. The seed records the method only on transactions; a booking must
-- know before any transaction exists how its customer will pay.
ALTER TABLE bookings ADD COLUMN payment_method payment_method NOT NULL DEFAULT 'cash';

-- ---------------------------------------------------------------------------
-- transactions
-- ---------------------------------------------------------------------------
-- departs from seed: transaction_number is "supplied by the application"; the application takes
-- it from this sequence (TXN-<year>-<8 digits>).
CREATE SEQUENCE transaction_number_seq START 1;

CREATE OR REPLACE FUNCTION next_transaction_number()
RETURNS TEXT AS $$
DECLARE
    n TEXT := nextval('transaction_number_seq')::TEXT;
BEGIN
    RETURN 'TXN-' || TO_CHAR(CURRENT_DATE, 'YYYY') || '-' || LPAD(n, GREATEST(8, length(n)), '0');
END;
$$ LANGUAGE plpgsql;

-- departs from seed: additions. A refund names the payment it returns; a client-supplied key
-- makes a money-moving request (a tip, a top-up) safe to retry.
ALTER TABLE transactions ADD COLUMN related_transaction_id BIGINT REFERENCES transactions(id);
ALTER TABLE transactions ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX uq_transactions_user_idempotency_key
    ON transactions (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- departs from seed: addition. A gateway names each payment intent once.
CREATE UNIQUE INDEX uq_transactions_gateway_intent
    ON transactions (gateway, gateway_transaction_id)
    WHERE gateway_transaction_id IS NOT NULL AND type IN ('payment', 'tip', 'wallet_topup');
-- departs from seed: addition. Amounts are positive; the type says which way money went.
ALTER TABLE transactions ADD CONSTRAINT chk_transactions_amount_positive CHECK (amount > 0);

-- ---------------------------------------------------------------------------
-- wallet_transactions: every line of a wallet
-- ---------------------------------------------------------------------------
CREATE TYPE wallet_entry_kind AS ENUM (
    'earnings',                  -- therapist: provider_earnings of a completed booking
    'tip_received',              -- therapist: a tip, in full
    'cash_collected',            -- therapist: cash the customer paid them, owed to the platform
    'cancellation_compensation', -- therapist: a cancellation fee less the platform's commission
    'payment',                   -- customer: a booking paid from the wallet
    'tip_given',                 -- customer: a tip paid from the wallet
    'cancellation_fee',          -- customer: a fee charged to the wallet (nothing was prepaid)
    'refund',                    -- customer: money given back to the wallet
    'topup',                     -- customer: money added through the gateway
    'payout',                    -- therapist: earnings paid out to the bank
    'payout_reversal'            -- therapist: a failed payout returned to the wallet
);

-- departs from seed: additions. A public id; what the line is for; the booking it belongs to;
-- and the payout that settled it (earning lines are paid out once).
ALTER TABLE wallet_transactions ADD COLUMN uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE wallet_transactions ADD COLUMN entry_kind wallet_entry_kind;
ALTER TABLE wallet_transactions ADD COLUMN booking_id BIGINT REFERENCES bookings(id) ON DELETE SET NULL;
ALTER TABLE wallet_transactions ADD COLUMN payout_id BIGINT REFERENCES payouts(id);
ALTER TABLE wallet_transactions ADD CONSTRAINT chk_wallet_transactions_amount_positive CHECK (amount > 0);
-- departs from seed: addition. Each line's balances agree with its amount.
ALTER TABLE wallet_transactions ADD CONSTRAINT chk_wallet_transactions_balance_moves CHECK (
    balance_after = CASE WHEN type = 'credit' THEN balance_before + amount ELSE balance_before - amount END
);
CREATE INDEX idx_wallet_transactions_booking ON wallet_transactions (booking_id);
CREATE INDEX idx_wallet_transactions_unpaid_earnings ON wallet_transactions (wallet_id)
    WHERE payout_id IS NULL AND entry_kind IN ('earnings', 'tip_received', 'cash_collected', 'cancellation_compensation');

-- ---------------------------------------------------------------------------
-- The platform's side of each booking
-- ---------------------------------------------------------------------------
-- departs from seed: addition. What the platform keeps or bears of each booking (commission,
-- the platform fee, promo discounts as a cost), so a booking's money adds up in the ledger:
-- customer payment = therapist's lines + these lines.
CREATE TABLE platform_ledger (
    id BIGSERIAL PRIMARY KEY,
    booking_id BIGINT REFERENCES bookings(id) ON DELETE SET NULL,
    transaction_id BIGINT REFERENCES transactions(id),
    kind VARCHAR(40) NOT NULL CHECK (kind IN
        ('commission', 'platform_fee', 'promo_cost', 'cancellation_commission', 'unpaid_refund')),
    amount NUMERIC(12, 2) NOT NULL, -- revenue positive, cost negative
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_platform_ledger_booking ON platform_ledger (booking_id);

-- ---------------------------------------------------------------------------
-- payouts
-- ---------------------------------------------------------------------------
-- departs from seed: additions. A public id, and the wallet line that paid it.
ALTER TABLE payouts ADD COLUMN uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE payouts ADD COLUMN total_bookings INTEGER NOT NULL DEFAULT 0;

-- ---------------------------------------------------------------------------
-- Gateway webhooks seen (replays refused, retries processed once)
-- ---------------------------------------------------------------------------
-- departs from seed: addition.
CREATE TABLE gateway_webhook_receipts (
    id BIGSERIAL PRIMARY KEY,
    gateway VARCHAR(50) NOT NULL,
    event_id VARCHAR(255) NOT NULL,
    signed_at BIGINT NOT NULL,
    event_type VARCHAR(100) NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (gateway, event_id, signed_at)
);

-- ---------------------------------------------------------------------------
-- reviews
-- ---------------------------------------------------------------------------
-- departs from seed: addition. Admins moderate reviews by a public id.
ALTER TABLE reviews ADD COLUMN uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid();

-- ---------------------------------------------------------------------------
-- notifications
-- ---------------------------------------------------------------------------
-- departs from seed: addition. One reminder per user and booking, however often the sweep runs.
ALTER TABLE notifications ADD COLUMN booking_id BIGINT REFERENCES bookings(id) ON DELETE CASCADE;
CREATE UNIQUE INDEX uq_notifications_one_reminder
    ON notifications (user_id, booking_id) WHERE type = 'booking.reminder';
CREATE INDEX idx_notifications_user_created ON notifications (user_id, created_at DESC, id DESC);

-- ---------------------------------------------------------------------------
-- Operator webhooks
-- ---------------------------------------------------------------------------
-- departs from seed: addition.
CREATE TABLE webhook_endpoints (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    url TEXT NOT NULL,
    events TEXT[] NOT NULL,
    secret TEXT NOT NULL, -- Standard Webhooks `whsec_<base64>`
    description TEXT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_by BIGINT REFERENCES users(id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- ---------------------------------------------------------------------------
-- The outbox: booking events to fan out, push notifications, operator webhooks and gateway
-- refunds, delivered at least
-- once by workers on any node (rows are claimed with FOR UPDATE SKIP LOCKED and a lease).
-- ---------------------------------------------------------------------------
-- departs from seed: addition.
CREATE TYPE outbox_status AS ENUM ('pending', 'delivered', 'dead');

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(), -- the message id receivers dedupe on
    channel VARCHAR(20) NOT NULL CHECK (channel IN ('push', 'webhook', 'gateway', 'event')),
    -- Who receives it (an endpoint, a device, the gateway): each claim takes a few rows per
    -- target, so one slow or dead receiver holds up nobody else.
    target VARCHAR(100) NOT NULL,
    endpoint_id BIGINT REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_type VARCHAR(100) NOT NULL,
    payload JSONB NOT NULL,
    status outbox_status NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_error TEXT,
    last_status_code INTEGER,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    delivered_at TIMESTAMPTZ,
    dead_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX idx_outbox_endpoint ON outbox (endpoint_id, id DESC) WHERE endpoint_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Settings operators change without a restart
-- ---------------------------------------------------------------------------
INSERT INTO app_settings (key, value, description) VALUES
('review_window_days', '14', 'Days after completion during which either party may review the other'),
('tip_limits', '{"max_amount": 10000}', 'Largest single tip, in PHP'),
('messaging', '{"max_length": 1000, "per_minute": 20, "open_after_completion_minutes": 60}',
 'In-booking chat: longest message, messages per sender per minute, minutes the chat stays open after completion'),
('reminder_minutes_before', '60', 'Minutes before a scheduled booking its parties are reminded');
