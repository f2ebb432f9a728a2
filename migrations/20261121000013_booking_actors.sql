-- Hilot schema, part 13: who changed a booking, and platform settings dispatch reads.

-- departs from seed: the timeline row written on a status change also records who made it
-- and why. The server sets two transaction-local settings before the UPDATE
-- (`SET LOCAL hilot.actor_user_id`, `SET LOCAL hilot.timeline_note`); a change made by hand in
-- psql still gets the seed's row, with no actor.
CREATE OR REPLACE FUNCTION log_booking_status_change()
RETURNS TRIGGER AS $$
DECLARE
    actor TEXT := NULLIF(current_setting('hilot.actor_user_id', true), '');
    note TEXT := NULLIF(current_setting('hilot.timeline_note', true), '');
BEGIN
    IF (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status) THEN
        INSERT INTO booking_timeline (booking_id, status, description, created_by, metadata)
        VALUES (NEW.id, NEW.status::TEXT,
                COALESCE(note, 'Status changed to ' || NEW.status::TEXT),
                actor::BIGINT,
                jsonb_build_object('from', OLD.status::TEXT));
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- departs from seed: a new booking's first status is logged too, so the timeline starts at
-- `pending` (the seed logged only changes).
CREATE OR REPLACE FUNCTION log_booking_created()
RETURNS TRIGGER AS $$
BEGIN
    INSERT INTO booking_timeline (booking_id, status, description, created_by)
    VALUES (NEW.id, NEW.status::TEXT, 'Booking requested', NEW.customer_id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_log_booking_created
AFTER INSERT ON bookings
FOR EACH ROW
EXECUTE FUNCTION log_booking_created();

-- departs from seed: a flat platform fee per booking (the seed has the column but no setting).
INSERT INTO app_settings (key, value, description) VALUES
('platform_fee', '0', 'Flat platform fee added to every booking, in PHP'),
('dispatch', '{"offer_timeout_s": 20, "batch_size": 1, "initial_radius_km": 5, "radius_step_km": 5}',
 'Dispatch: offer timeout, therapists offered at once, and how the search radius widens');
