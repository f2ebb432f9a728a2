-- Hilot schema: wellness centres (stores) and their in-store bookings, and what the dispatch
-- console reads (alert thresholds, search).

CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- ---------------------------------------------------------------------------
-- store_profiles
-- ---------------------------------------------------------------------------
-- departs from seed: addition. Opening hours are local times of day; this says whose day.
ALTER TABLE store_profiles ADD COLUMN timezone VARCHAR(64) NOT NULL DEFAULT 'Asia/Manila';
-- departs from seed: addition. A store has at least one room (the seed's default is 1, with
-- nothing to stop 0 or a negative number), and not absurdly many.
ALTER TABLE store_profiles
    ADD CONSTRAINT chk_store_profiles_rooms CHECK (number_of_rooms BETWEEN 1 AND 500);

-- ---------------------------------------------------------------------------
-- bookings: one active booking per therapist, not per store
-- ---------------------------------------------------------------------------
-- departs from seed: uq_bookings_one_active_per_provider (an earlier addition) covers home
-- services only. An in-store booking's provider is the store, which holds as many bookings at
-- once as it has rooms; store_visits below enforces that.
DROP INDEX uq_bookings_one_active_per_provider;
CREATE UNIQUE INDEX uq_bookings_one_active_per_provider
    ON bookings (provider_id)
    WHERE status IN ('accepted', 'en_route', 'arrived', 'in_progress') AND type = 'home_service';

-- ---------------------------------------------------------------------------
-- store_visits
-- ---------------------------------------------------------------------------
-- departs from seed: addition. The time an in-store booking holds a room: from its start
-- (now, or the scheduled time) for the service's duration. One row per in-store booking.
-- Kept beside bookings rather than in it, so the therapists' own schedule rules never see
-- store bookings and these rules never see theirs.
CREATE TABLE store_visits (
    booking_id BIGINT PRIMARY KEY REFERENCES bookings(id) ON DELETE CASCADE,
    store_provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    slot TSTZRANGE NOT NULL,
    checked_in_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT chk_store_visits_slot
        CHECK (NOT isempty(slot) AND lower_inc(slot) AND NOT upper_inc(slot)
               AND NOT lower_inf(slot) AND NOT upper_inf(slot))
);

CREATE INDEX idx_store_visits_store_slot ON store_visits USING GIST (store_provider_id, slot);

-- departs from seed: addition. At most number_of_rooms bookings of a store overlap at any
-- instant, enforced here whatever the caller: a new visit locks its store's profile row
-- (serialising the store's bookings, and only that store's), then finds the busiest instant
-- of its slot among the store's live bookings. Instants where the count can peak are the
-- slot's start and the starts of the overlapping visits inside it.
CREATE OR REPLACE FUNCTION enforce_store_room_capacity()
RETURNS TRIGGER AS $$
DECLARE
    rooms INTEGER;
    busiest BIGINT;
BEGIN
    SELECT COALESCE(number_of_rooms, 1) INTO rooms
    FROM store_profiles WHERE provider_id = NEW.store_provider_id FOR NO KEY UPDATE;
    IF rooms IS NULL THEN
        RAISE EXCEPTION 'provider % is not a store', NEW.store_provider_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'store_visits_store';
    END IF;
    WITH live AS (
        SELECT v.slot
        FROM store_visits v JOIN bookings b ON b.id = v.booking_id
        WHERE v.store_provider_id = NEW.store_provider_id
          AND v.booking_id <> NEW.booking_id
          AND v.slot && NEW.slot
          AND b.status IN ('pending', 'accepted', 'arrived', 'in_progress')
    ), instants AS (
        SELECT lower(NEW.slot) AS at
        UNION
        SELECT lower(slot) FROM live WHERE NEW.slot @> lower(slot)
    )
    SELECT COALESCE(max((SELECT count(*) FROM live WHERE live.slot @> instants.at)), 0)
    INTO busiest FROM instants;
    IF busiest + 1 > rooms THEN
        RAISE EXCEPTION 'every room of store % is taken during %', NEW.store_provider_id, NEW.slot
            USING ERRCODE = 'check_violation', CONSTRAINT = 'store_room_capacity';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_store_visits_room_capacity
BEFORE INSERT OR UPDATE OF slot, store_provider_id ON store_visits
FOR EACH ROW
EXECUTE FUNCTION enforce_store_room_capacity();

-- ---------------------------------------------------------------------------
-- search and settings
-- ---------------------------------------------------------------------------
-- departs from seed: addition. Dispatchers find people by any part of their name.
CREATE INDEX idx_users_name_trgm
    ON users USING GIN ((first_name || ' ' || last_name) gin_trgm_ops);

-- departs from seed: additions.
INSERT INTO app_settings (key, value, description) VALUES
('alerts', '{"pending_wait_s": 120, "silent_s": 90, "overrun_margin_s": 900}',
 'Dispatch console alerts: a booking waiting this long, a therapist on a booking silent this long, a session past its duration by this margin'),
('in_store', '{"no_show_grace_minutes": 15, "check_in_early_minutes": 60}',
 'In-store bookings: a customer not checked in this long after the start is a no-show; check-in opens this early')
ON CONFLICT (key) DO NOTHING;
