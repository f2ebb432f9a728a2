-- Hilot schema: dispatch offers in the database, and who may be offered a booking now.

-- departs from seed: addition. Every offer of a booking to a therapist, open or closed. Any
-- node can accept an open offer (accept locks the booking, then the offer), and a restart
-- loses none: the matcher that takes over reloads the open ones and their expiry.
CREATE TYPE offer_outcome AS ENUM ('accepted', 'declined', 'expired', 'withdrawn', 'lost_race');

CREATE TABLE booking_offers (
    id BIGSERIAL PRIMARY KEY,
    booking_id BIGINT NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    -- The booking's offer round (1 for its first offers), so a dispatcher reads the order.
    round INTEGER NOT NULL CHECK (round >= 1),
    sent_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    -- NULL while the offer is open.
    outcome offer_outcome,
    closed_at TIMESTAMPTZ,
    distance_m DOUBLE PRECISION NOT NULL CHECK (distance_m >= 0),
    eta_seconds INTEGER NOT NULL CHECK (eta_seconds >= 0),
    CHECK ((outcome IS NULL) = (closed_at IS NULL))
);

CREATE INDEX idx_booking_offers_booking ON booking_offers (booking_id, id);
-- A therapist holds at most one open offer at a time, whichever node made it.
CREATE UNIQUE INDEX uq_booking_offers_one_open_per_provider
    ON booking_offers (provider_id) WHERE outcome IS NULL;
-- The matcher reloads open offers when it takes over a region.
CREATE INDEX idx_booking_offers_open ON booking_offers (expires_at) WHERE outcome IS NULL;

-- departs from seed: addition. Therapists who may be offered a booking or accept one right
-- now: a live therapist profile, verified and active, whose account is active and still holds
-- the therapist role. Offers and accepts both read this one definition, inside their
-- transaction.
CREATE VIEW therapists_eligible_now AS
SELECT p.id AS provider_id, p.user_id
FROM providers p
JOIN users u ON u.id = p.user_id
WHERE p.type = 'therapist'
  AND p.deleted_at IS NULL
  AND p.verification_status = 'verified'
  AND p.is_active IS NOT FALSE
  AND u.deleted_at IS NULL
  AND u.is_active IS NOT FALSE
  AND EXISTS (
      SELECT 1 FROM model_has_roles mr JOIN roles r ON r.id = mr.role_id
      WHERE mr.model_id = u.id AND mr.model_type = 'App\Models\User' AND r.name = 'therapist'
  );

-- departs from seed: the dispatch setting gains batch_window_ms (rounds run at most this often;
-- 0 matches each event at once).
UPDATE app_settings SET value = value || '{"batch_window_ms": 1000}'::jsonb
WHERE key = 'dispatch' AND NOT (value ? 'batch_window_ms');
