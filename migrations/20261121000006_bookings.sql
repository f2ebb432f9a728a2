-- Hilot schema, part 6: booking system (seed section 3.4).
-- bookings (+ booking_number_seq), booking_locations, booking_timeline.

-- ---------------------------------------------------------------------------
-- bookings
-- ---------------------------------------------------------------------------
CREATE TABLE bookings (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    -- SPC-2026-000001. NOT NULL as in the seed, yet callers omit it on
    -- INSERT: the BEFORE INSERT trigger below fills it in, and BEFORE row
    -- triggers run before NOT NULL constraints are checked.
    booking_number VARCHAR(20) UNIQUE NOT NULL,

    -- Parties
    customer_id BIGINT NOT NULL REFERENCES users(id),
    -- departs from seed: nullable (seed: NOT NULL). A "book now" booking is
    -- created pending with no therapist; provider_id is set when one accepts.
    provider_id BIGINT REFERENCES providers(id),
    service_id BIGINT NOT NULL REFERENCES services(id),

    -- Booking type
    type booking_type_kind NOT NULL,

    -- Scheduling
    booking_type booking_schedule_type NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    scheduled_at TIMESTAMPTZ, -- for scheduled bookings
    accepted_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    cancelled_at TIMESTAMPTZ,

    -- Status
    status booking_status DEFAULT 'pending',

    -- Pricing
    service_price NUMERIC(10, 2) NOT NULL,
    distance_surcharge NUMERIC(8, 2) DEFAULT 0.00,
    platform_fee NUMERIC(8, 2) DEFAULT 0.00,
    tip_amount NUMERIC(8, 2) DEFAULT 0.00,
    promo_discount NUMERIC(8, 2) DEFAULT 0.00,
    total_amount NUMERIC(10, 2) NOT NULL,

    -- Provider earnings
    provider_earnings NUMERIC(10, 2) NOT NULL,
    commission_amount NUMERIC(8, 2) NOT NULL,
    commission_rate NUMERIC(5, 2) NOT NULL,

    -- Special instructions
    customer_notes TEXT,
    provider_notes TEXT,

    -- Cancellation
    cancelled_by BIGINT REFERENCES users(id),
    cancellation_reason TEXT,
    cancellation_fee NUMERIC(8, 2) DEFAULT 0.00,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ,

    -- departs from seed: addition. Client-supplied idempotency key of the
    -- create-booking request and a hash of its body, so a retried request
    -- returns the original booking (same key + different hash = conflict).
    idempotency_key TEXT,
    idempotency_request_hash TEXT,

    -- departs from seed: addition. With provider_id now nullable, only a
    -- booking nobody has accepted (pending, or cancelled while pending) may
    -- lack a provider.
    CONSTRAINT chk_bookings_provider_assigned
        CHECK (provider_id IS NOT NULL OR status IN ('pending', 'cancelled'))
);

CREATE INDEX idx_bookings_customer ON bookings (customer_id);
CREATE INDEX idx_bookings_provider ON bookings (provider_id);
CREATE INDEX idx_bookings_status ON bookings (status);
CREATE INDEX idx_bookings_type ON bookings (type);
CREATE INDEX idx_bookings_scheduled ON bookings (scheduled_at);
CREATE INDEX idx_bookings_created ON bookings (created_at);

-- Section 4.1 critical performance indexes (seed: CREATE INDEX CONCURRENTLY;
-- departs from seed: plain CREATE INDEX, since sqlx runs each migration in a
-- transaction and CONCURRENTLY cannot run inside one).
CREATE INDEX idx_bookings_customer_status ON bookings (customer_id, status);
CREATE INDEX idx_bookings_provider_status ON bookings (provider_id, status);
-- Section 4.3: pending bookings (dispatch queue, timeouts).
CREATE INDEX idx_bookings_pending ON bookings (created_at) WHERE status = 'pending';

-- departs from seed: addition. Idempotent booking creation: one booking per
-- (customer, idempotency key); rows without a key are unconstrained.
CREATE UNIQUE INDEX uq_bookings_customer_idempotency_key
    ON bookings (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- departs from seed: addition. A provider can hold at most one active
-- booking; two concurrent accepts for the same provider cannot both commit
-- (the loser gets a unique_violation). Pending rows (provider_id NULL) are
-- not affected.
CREATE UNIQUE INDEX uq_bookings_one_active_per_provider
    ON bookings (provider_id)
    WHERE status IN ('accepted', 'en_route', 'arrived', 'in_progress');

-- Auto-increment booking number
CREATE SEQUENCE booking_number_seq START 1;

-- SPC-<year>-<sequence, zero-padded to 6 digits>. The year is CURRENT_DATE
-- in the session TimeZone (UTC for the server). The sequence is global, not
-- reset per year, so numbers keep increasing across years.
CREATE OR REPLACE FUNCTION generate_booking_number()
RETURNS TRIGGER AS $$
DECLARE
    n TEXT := nextval('booking_number_seq')::TEXT;
BEGIN
    -- departs from seed: the seed's LPAD(n, 6, '0') silently TRUNCATES
    -- numbers beyond 999999 (LPAD('1000000', 6) = '100000'), which would
    -- collide with an earlier booking_number; pad to at least 6 digits
    -- instead (VARCHAR(20) leaves room for 11 digits).
    NEW.booking_number = 'SPC-' || TO_CHAR(CURRENT_DATE, 'YYYY') || '-' ||
                         LPAD(n, GREATEST(6, length(n)), '0');
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_generate_booking_number
BEFORE INSERT ON bookings
FOR EACH ROW
EXECUTE FUNCTION generate_booking_number();

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_bookings_touch_updated_at
BEFORE UPDATE ON bookings
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- booking_locations
-- ---------------------------------------------------------------------------
CREATE TABLE booking_locations (
    id BIGSERIAL PRIMARY KEY,
    booking_id BIGINT NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,

    -- Customer location
    address VARCHAR(500) NOT NULL,
    unit_number VARCHAR(50),
    building_name VARCHAR(255),
    landmark VARCHAR(255),

    latitude NUMERIC(10, 8) NOT NULL,
    longitude NUMERIC(11, 8) NOT NULL,
    location GEOGRAPHY(POINT, 4326), -- PostGIS, maintained by trigger below

    -- Distance calculation (from provider to customer)
    distance_km NUMERIC(6, 2),
    estimated_travel_time_minutes INTEGER,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    UNIQUE (booking_id)
);

-- Also listed in section 4.2 under the same name and definition: created once.
CREATE INDEX idx_booking_locations_location ON booking_locations USING GIST (location);

-- departs from seed: addition. The seed has a GiST-indexed location column
-- here but forgot the trigger that fills it from latitude/longitude (every
-- other table with lat/lng has one), so location would stay NULL.
CREATE OR REPLACE FUNCTION update_booking_location()
RETURNS TRIGGER AS $$
BEGIN
    NEW.location = ST_SetSRID(ST_MakePoint(NEW.longitude, NEW.latitude), 4326)::geography;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_update_booking_location
BEFORE INSERT OR UPDATE ON booking_locations
FOR EACH ROW
EXECUTE FUNCTION update_booking_location();

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_booking_locations_touch_updated_at
BEFORE UPDATE ON booking_locations
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- booking_timeline
-- ---------------------------------------------------------------------------
CREATE TABLE booking_timeline (
    id BIGSERIAL PRIMARY KEY,
    booking_id BIGINT NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,

    status VARCHAR(50) NOT NULL,
    description TEXT,
    metadata JSONB, -- additional data (e.g., location, ETA)

    created_by BIGINT REFERENCES users(id),
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_booking_timeline_booking ON booking_timeline (booking_id);
CREATE INDEX idx_booking_timeline_status ON booking_timeline (status);

-- Trigger to auto-log status changes (only UPDATEs, as in the seed; the
-- initial 'pending' of a new booking is not logged).
CREATE OR REPLACE FUNCTION log_booking_status_change()
RETURNS TRIGGER AS $$
BEGIN
    IF (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status) THEN
        INSERT INTO booking_timeline (booking_id, status, description)
        VALUES (NEW.id, NEW.status::TEXT, 'Status changed to ' || NEW.status::TEXT);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_log_booking_status_change
AFTER UPDATE ON bookings
FOR EACH ROW
EXECUTE FUNCTION log_booking_status_change();
