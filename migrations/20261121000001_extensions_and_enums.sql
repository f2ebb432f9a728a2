-- Hilot schema, part 1: extensions, enum types, shared trigger functions.
--
-- Translated from the Spacall schema doc (seed 002, "MySQL-flavoured SQL for
-- PostgreSQL 15 + PostGIS 3") into valid PostgreSQL 15 + PostGIS 3.
--
-- Conventions used in every migration file:
--   * departs from seed: every seed TIMESTAMP is `timestamptz` here (said
--     once, not at each column): the server and the clients speak RFC 3339
--     UTC, so instants must be stored unambiguously (a plain `timestamp`
--     would silently depend on the session TimeZone).
--   * DECIMAL(p, s) -> NUMERIC(p, s), same precision; INT -> integer.
--   * Inline MySQL `ENUM(...)` -> named Postgres enum types (below).
--   * Inline `INDEX name (cols)` -> separate CREATE INDEX with the same name.
--   * departs from seed: sqlx runs each migration file inside one
--     transaction, so the seed's `CREATE INDEX CONCURRENTLY` (section 4) is
--     written as plain CREATE INDEX (CONCURRENTLY cannot run inside a
--     transaction block). On a fresh database the tables are empty, so
--     nothing is lost.
--   * gen_random_uuid() is built into PostgreSQL 13+, no pgcrypto needed.
--   * Every departure from the seed is marked `-- departs from seed: ...`.

-- PostGIS first: geography columns, GiST indexes and the lat/lng triggers
-- need it. (postgis is not a "trusted" extension: the migrating role must be
-- a superuser, or a DBA must have created the extension beforehand.)
CREATE EXTENSION IF NOT EXISTS postgis;

-- ---------------------------------------------------------------------------
-- Enum types (the seed's inline ENUM(...) columns)
-- ---------------------------------------------------------------------------

-- users.gender
CREATE TYPE user_gender AS ENUM ('male', 'female', 'other', 'prefer_not_to_say');

-- providers.type
CREATE TYPE provider_type AS ENUM ('therapist', 'store');

-- providers.verification_status
CREATE TYPE verification_status AS ENUM ('pending', 'under_review', 'verified', 'rejected');

-- provider_documents.verification_status (no 'under_review' in the seed)
CREATE TYPE document_verification_status AS ENUM ('pending', 'verified', 'rejected');

-- bookings.type
CREATE TYPE booking_type_kind AS ENUM ('home_service', 'in_store');

-- bookings.booking_type
CREATE TYPE booking_schedule_type AS ENUM ('now', 'scheduled');

-- bookings.status
CREATE TYPE booking_status AS ENUM (
    'pending',        -- waiting for provider acceptance
    'accepted',       -- provider accepted
    'en_route',       -- therapist on the way (home service)
    'arrived',        -- therapist arrived
    'in_progress',    -- service ongoing
    'completed',      -- service done
    'cancelled',      -- cancelled by customer/provider
    'no_show'         -- customer didn't show up (in-store)
);

-- transactions.type
CREATE TYPE transaction_type AS ENUM ('payment', 'refund', 'payout', 'wallet_topup', 'tip');

-- transactions.payment_method
CREATE TYPE payment_method AS ENUM ('card', 'gcash', 'paymaya', 'wallet', 'cash');

-- transactions.status
CREATE TYPE transaction_status AS ENUM ('pending', 'processing', 'completed', 'failed', 'refunded');

-- wallet_transactions.type
CREATE TYPE wallet_transaction_type AS ENUM ('credit', 'debit');

-- payouts.status
CREATE TYPE payout_status AS ENUM ('pending', 'processing', 'completed', 'failed');

-- promo_codes.discount_type
CREATE TYPE discount_type AS ENUM ('percentage', 'fixed_amount');

-- reviews.reviewer_type
CREATE TYPE reviewer_type AS ENUM ('customer', 'provider');

-- device_tokens.device_type
CREATE TYPE device_type AS ENUM ('android', 'ios', 'web');

-- ---------------------------------------------------------------------------
-- Shared trigger function: touch updated_at
-- ---------------------------------------------------------------------------
-- departs from seed: addition. The seed declares updated_at DEFAULT
-- CURRENT_TIMESTAMP but never maintains it on UPDATE. This BEFORE UPDATE
-- trigger sets updated_at = now() unless the UPDATE statement itself assigned
-- a new value to updated_at. It is attached to every table that has an
-- updated_at column, in the migration that creates that table.
CREATE OR REPLACE FUNCTION touch_updated_at()
RETURNS TRIGGER AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at = now();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
