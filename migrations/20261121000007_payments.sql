-- Hilot schema, part 7: payment system (seed section 3.5).
-- transactions, wallets (+ wallet-per-user trigger on users),
-- wallet_transactions, payouts, promo_codes, promo_code_usages.
-- departs from seed: defined after bookings (the seed's section order puts
-- payments first) because transactions and promo_code_usages reference it.

-- ---------------------------------------------------------------------------
-- transactions
-- ---------------------------------------------------------------------------
CREATE TABLE transactions (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    transaction_number VARCHAR(20) UNIQUE NOT NULL, -- supplied by the application

    booking_id BIGINT REFERENCES bookings(id) ON DELETE SET NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),

    -- Transaction details
    type transaction_type NOT NULL,
    payment_method payment_method NOT NULL,

    -- Amounts
    amount NUMERIC(10, 2) NOT NULL,
    currency VARCHAR(3) DEFAULT 'PHP',

    -- Gateway details
    gateway VARCHAR(50), -- stripe, paymongo, etc.
    gateway_transaction_id VARCHAR(255),
    gateway_response JSONB,

    -- Status
    status transaction_status DEFAULT 'pending',

    -- Metadata
    description TEXT,
    metadata JSONB,

    processed_at TIMESTAMPTZ,
    failed_at TIMESTAMPTZ,
    failure_reason TEXT,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_transactions_booking ON transactions (booking_id);
CREATE INDEX idx_transactions_user ON transactions (user_id);
CREATE INDEX idx_transactions_status ON transactions (status);
CREATE INDEX idx_transactions_gateway_id ON transactions (gateway_transaction_id);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_transactions_touch_updated_at
BEFORE UPDATE ON transactions
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- wallets
-- ---------------------------------------------------------------------------
CREATE TABLE wallets (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,

    balance NUMERIC(12, 2) DEFAULT 0.00,
    currency VARCHAR(3) DEFAULT 'PHP',

    total_earned NUMERIC(12, 2) DEFAULT 0.00, -- for providers
    total_spent NUMERIC(12, 2) DEFAULT 0.00, -- for customers

    is_active BOOLEAN DEFAULT TRUE,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    UNIQUE (user_id)
);

-- Duplicates the UNIQUE(user_id) index; kept for fidelity with the seed.
CREATE INDEX idx_wallets_user ON wallets (user_id);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_wallets_touch_updated_at
BEFORE UPDATE ON wallets
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- Trigger to create wallet on user creation
CREATE OR REPLACE FUNCTION create_user_wallet()
RETURNS TRIGGER AS $$
BEGIN
    INSERT INTO wallets (user_id) VALUES (NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_create_user_wallet
AFTER INSERT ON users
FOR EACH ROW
EXECUTE FUNCTION create_user_wallet();

-- ---------------------------------------------------------------------------
-- wallet_transactions
-- ---------------------------------------------------------------------------
CREATE TABLE wallet_transactions (
    id BIGSERIAL PRIMARY KEY,
    wallet_id BIGINT NOT NULL REFERENCES wallets(id) ON DELETE CASCADE,

    type wallet_transaction_type NOT NULL,
    amount NUMERIC(10, 2) NOT NULL,

    balance_before NUMERIC(12, 2) NOT NULL,
    balance_after NUMERIC(12, 2) NOT NULL,

    reference_type VARCHAR(255), -- Booking, Transaction, etc.
    reference_id BIGINT,

    description TEXT,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_wallet_transactions_wallet ON wallet_transactions (wallet_id);
CREATE INDEX idx_wallet_transactions_created ON wallet_transactions (created_at);

-- ---------------------------------------------------------------------------
-- payouts
-- ---------------------------------------------------------------------------
CREATE TABLE payouts (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,

    -- Payout period
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,

    -- Amounts
    gross_earnings NUMERIC(12, 2) NOT NULL,
    commission_amount NUMERIC(12, 2) NOT NULL,
    net_payout NUMERIC(12, 2) NOT NULL,

    -- Bank details
    bank_name VARCHAR(100),
    account_name VARCHAR(255),
    account_number VARCHAR(50),

    -- Status
    status payout_status DEFAULT 'pending',

    processed_at TIMESTAMPTZ,
    failed_at TIMESTAMPTZ,
    failure_reason TEXT,

    -- Reference
    reference_number VARCHAR(50),

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_payouts_provider ON payouts (provider_id);
CREATE INDEX idx_payouts_status ON payouts (status);
CREATE INDEX idx_payouts_period ON payouts (period_start, period_end);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_payouts_touch_updated_at
BEFORE UPDATE ON payouts
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- promo_codes
-- ---------------------------------------------------------------------------
CREATE TABLE promo_codes (
    id BIGSERIAL PRIMARY KEY,
    code VARCHAR(50) UNIQUE NOT NULL,

    -- Discount
    discount_type discount_type NOT NULL,
    discount_value NUMERIC(10, 2) NOT NULL,
    max_discount_amount NUMERIC(10, 2), -- for percentage discounts

    -- Validity
    valid_from TIMESTAMPTZ NOT NULL,
    valid_until TIMESTAMPTZ NOT NULL,

    -- Limits
    usage_limit INTEGER, -- total uses allowed
    usage_count INTEGER DEFAULT 0,
    per_user_limit INTEGER DEFAULT 1,
    min_booking_amount NUMERIC(10, 2),

    -- Applicability
    applicable_service_ids JSONB, -- null = all services
    applicable_provider_ids JSONB,
    new_customers_only BOOLEAN DEFAULT FALSE,

    is_active BOOLEAN DEFAULT TRUE,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

-- Duplicates the UNIQUE(code) index; kept for fidelity with the seed.
CREATE INDEX idx_promo_codes_code ON promo_codes (code);
CREATE INDEX idx_promo_codes_validity ON promo_codes (valid_from, valid_until);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_promo_codes_touch_updated_at
BEFORE UPDATE ON promo_codes
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- promo_code_usages
-- ---------------------------------------------------------------------------
CREATE TABLE promo_code_usages (
    id BIGSERIAL PRIMARY KEY,
    promo_code_id BIGINT NOT NULL REFERENCES promo_codes(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    booking_id BIGINT REFERENCES bookings(id) ON DELETE SET NULL,

    discount_amount NUMERIC(10, 2) NOT NULL,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_promo_usages_code ON promo_code_usages (promo_code_id);
CREATE INDEX idx_promo_usages_user ON promo_code_usages (user_id);
