-- Hilot schema: scheduled bookings. Weekly schedules and blocked times (seed 000's
-- practitioner_availability and practitioner_blocked_times), reschedule requests (seed 000's
-- booking_reschedule_requests), and the database rule that one therapist never holds two
-- overlapping home-service bookings (seed 003: one slot, one booking, enforced by the database).

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- ---------------------------------------------------------------------------
-- practitioner_availability: a therapist's weekly schedule, several ranges per day
-- ---------------------------------------------------------------------------
-- departs from seed: practitioner_id UUID -> provider_id BIGINT (Hilot's providers); id is a
-- BIGSERIAL like every Hilot table. session_types is left out (every Hilot session is in
-- person) and so is break_duration: the gap around a booking is the platform's travel buffer
-- (app setting `scheduling.travel_buffer_minutes`), the same for every therapist, so the
-- slots a customer sees and the database's no-overlap rule always agree.
CREATE TABLE practitioner_availability (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    day_of_week INTEGER NOT NULL, -- 0=Sunday, 6=Saturday
    start_time TIME NOT NULL,
    -- departs from seed: 24:00 is allowed (PostgreSQL's TIME takes it), meaning the end of the
    -- day, so a range can run until midnight.
    end_time TIME NOT NULL,
    timezone VARCHAR(50) NOT NULL,
    active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT availability_day_range CHECK (day_of_week >= 0 AND day_of_week <= 6),
    CONSTRAINT availability_time_order CHECK (start_time < end_time)
);

CREATE INDEX idx_prac_avail_practitioner ON practitioner_availability (provider_id);
CREATE INDEX idx_prac_avail_day ON practitioner_availability (day_of_week);
CREATE INDEX idx_prac_avail_active ON practitioner_availability (active);

-- departs from seed: addition. Ranges of one day never overlap (the API refuses it; this makes
-- it hold for any writer).
ALTER TABLE practitioner_availability ADD CONSTRAINT excl_prac_avail_overlap
    EXCLUDE USING gist (provider_id WITH =, day_of_week WITH =,
                        tsrange('2000-01-01'::date + start_time, '2000-01-01'::date + end_time) WITH &&);

CREATE TRIGGER trg_prac_avail_touch_updated_at
BEFORE UPDATE ON practitioner_availability
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- practitioner_blocked_times: time off and breaks
-- ---------------------------------------------------------------------------
-- departs from seed: practitioner_id UUID -> provider_id BIGINT; a BIGSERIAL id plus a public
-- uuid (internal ids never leave the server). Hilot writes recurring = false: repeating breaks
-- are gaps in the weekly schedule.
CREATE TABLE practitioner_blocked_times (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    start_datetime TIMESTAMPTZ NOT NULL,
    end_datetime TIMESTAMPTZ NOT NULL,
    reason VARCHAR(255),
    recurring BOOLEAN DEFAULT FALSE,
    recurrence_pattern JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT blocked_time_order CHECK (start_datetime < end_datetime)
);

CREATE INDEX idx_prac_blocked_practitioner ON practitioner_blocked_times (provider_id);
CREATE INDEX idx_prac_blocked_datetime ON practitioner_blocked_times (start_datetime, end_datetime);

-- ---------------------------------------------------------------------------
-- bookings: how long a booking keeps its therapist, and who a request names
-- ---------------------------------------------------------------------------
-- departs from seed: addition (seed 000's bookings.duration_minutes). The session's length,
-- copied from the service when the booking is made, so a later catalog change moves no booking.
ALTER TABLE bookings ADD COLUMN duration_minutes INTEGER CHECK (duration_minutes > 0);
-- departs from seed: addition. The travel buffer kept free on each side of a scheduled
-- session (app setting `scheduling.travel_buffer_minutes` when the booking was made).
ALTER TABLE bookings ADD COLUMN buffer_minutes INTEGER NOT NULL DEFAULT 0 CHECK (buffer_minutes >= 0);
-- departs from seed: addition. A `now` booking's estimated travel when it was accepted: it
-- keeps its therapist from acceptance until arrival, the session and the buffer have passed.
ALTER TABLE bookings ADD COLUMN travel_minutes INTEGER CHECK (travel_minutes >= 0);
-- departs from seed: addition. A scheduled booking that names its therapist is a request to
-- them: it holds their slot while pending, and provider_id is set when they accept.
ALTER TABLE bookings ADD COLUMN requested_provider_id BIGINT REFERENCES providers(id);
-- departs from seed: addition. When a pending request to a named therapist lapses.
ALTER TABLE bookings ADD COLUMN request_expires_at TIMESTAMPTZ;
-- departs from seed: addition. When the customer of an open scheduled booking was told that
-- nobody had taken it yet (once).
ALTER TABLE bookings ADD COLUMN unmatched_warned_at TIMESTAMPTZ;
-- departs from seed: addition. When the assigned therapist was told to set out (scheduled_at
-- minus the lead time), once.
ALTER TABLE bookings ADD COLUMN due_notified_at TIMESTAMPTZ;

CREATE INDEX idx_bookings_requested_provider ON bookings (requested_provider_id)
    WHERE requested_provider_id IS NOT NULL;
CREATE INDEX idx_bookings_request_expiry ON bookings (request_expires_at)
    WHERE status = 'pending' AND request_expires_at IS NOT NULL;

UPDATE bookings b SET duration_minutes = s.duration_minutes
FROM services s WHERE s.id = b.service_id AND b.duration_minutes IS NULL;

-- The time a home-service booking keeps its therapist: a scheduled booking its session with
-- the travel buffer on each side; a `now` booking from its acceptance (the therapist sets out at
-- once) until travel, session and buffer have passed. Minute intervals do not depend on the
-- session time zone, so this is truly immutable (an exclusion constraint needs that).
CREATE FUNCTION booking_busy_range(
    scheduled_at TIMESTAMPTZ, accepted_at TIMESTAMPTZ, travel_minutes INTEGER,
    duration_minutes INTEGER, buffer_minutes INTEGER
) RETURNS tstzrange
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN duration_minutes IS NULL THEN NULL
        WHEN scheduled_at IS NOT NULL THEN
            tstzrange(scheduled_at - make_interval(mins => buffer_minutes),
                      scheduled_at + make_interval(mins => duration_minutes + buffer_minutes))
        WHEN accepted_at IS NOT NULL THEN
            tstzrange(accepted_at,
                      accepted_at + make_interval(mins => COALESCE(travel_minutes, 0) + duration_minutes + buffer_minutes))
    END
$$;

-- departs from seed: addition (seed 003's "one slot, one booking"). One therapist never holds
-- two overlapping home-service bookings of either kind: pending requests naming them and
-- bookings they hold, each with its travel buffers. In-store bookings belong to stores and
-- are not covered.
ALTER TABLE bookings ADD CONSTRAINT excl_bookings_therapist_overlap
    EXCLUDE USING gist (
        COALESCE(provider_id, requested_provider_id) WITH =,
        booking_busy_range(scheduled_at, accepted_at, travel_minutes, duration_minutes, buffer_minutes) WITH &&
    ) WHERE (type = 'home_service'
             AND status IN ('pending', 'accepted', 'en_route', 'arrived', 'in_progress'));

-- departs from seed: uq_bookings_one_active_per_provider (an earlier addition) now means one
-- booking *under way* per therapist: a therapist with accepted scheduled bookings later on
-- still takes book-now work, and the exclusion constraint above keeps the times apart.
DROP INDEX IF EXISTS uq_bookings_one_active_per_provider;
CREATE UNIQUE INDEX uq_bookings_one_active_per_provider
    ON bookings (provider_id)
    WHERE type = 'home_service'
      AND (status IN ('en_route', 'arrived', 'in_progress')
           OR (status = 'accepted' AND booking_type = 'now'));

-- Accepted scheduled bookings coming up, for the reminder and due sweeps.
CREATE INDEX idx_bookings_scheduled_upcoming ON bookings (scheduled_at)
    WHERE booking_type = 'scheduled' AND status IN ('pending', 'accepted');

-- ---------------------------------------------------------------------------
-- booking_reschedule_requests
-- ---------------------------------------------------------------------------
CREATE TYPE reschedule_status AS ENUM ('pending', 'approved', 'rejected', 'expired');

-- departs from seed: BIGINT ids referencing Hilot's bookings and users, plus a public uuid
-- and expires_at (unanswered requests lapse).
CREATE TABLE booking_reschedule_requests (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    booking_id BIGINT NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,
    requested_by BIGINT NOT NULL REFERENCES users(id),
    original_scheduled_at TIMESTAMPTZ NOT NULL,
    new_scheduled_at TIMESTAMPTZ NOT NULL,
    reason TEXT,
    status reschedule_status DEFAULT 'pending',
    responded_by BIGINT REFERENCES users(id),
    responded_at TIMESTAMPTZ,
    response_notes TEXT,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW(),

    CONSTRAINT reschedule_different_time CHECK (original_scheduled_at != new_scheduled_at)
);

CREATE INDEX idx_reschedule_booking ON booking_reschedule_requests (booking_id);
CREATE INDEX idx_reschedule_status ON booking_reschedule_requests (status);
-- departs from seed: addition. At most one open request per booking.
CREATE UNIQUE INDEX uq_reschedule_one_pending
    ON booking_reschedule_requests (booking_id) WHERE status = 'pending';

-- departs from seed: addition. Each reminder of a booking (one per mark of
-- scheduling.reminder_minutes, 60 and 15 minutes ahead by default) reaches each party once,
-- however many nodes sweep. It replaces the one-reminder-per-booking index of the money
-- migration, which allowed a single reminder.
DROP INDEX IF EXISTS uq_notifications_one_reminder;
CREATE UNIQUE INDEX uq_notifications_one_reminder_each
    ON notifications (user_id, booking_id, (action_data->>'mark'))
    WHERE type = 'booking.reminder';

-- ---------------------------------------------------------------------------
-- settings
-- ---------------------------------------------------------------------------
INSERT INTO app_settings (key, value, description) VALUES
('scheduling',
 '{"slot_step_minutes": 15, "travel_buffer_minutes": 15, "lead_minutes": 60, "horizon_days": 30, "max_ranges_per_day": 6, "unmatched_warning_minutes": 60, "reschedule_timeout_s": 86400}',
 'Scheduled bookings: slot step, travel buffer each side of a booking, lead time (earliest booking, en-route time, open bookings cancelled), horizon, ranges per day, warning before an open booking is cancelled, reschedule answer time'),
('scheduled_request_timeout', '1800',
 'Seconds a named therapist has to accept or decline a scheduled request')
ON CONFLICT (key) DO NOTHING;
