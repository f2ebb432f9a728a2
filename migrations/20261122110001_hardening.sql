-- Hilot schema, part 14: hardening (WebSocket tickets, the per-customer promo limit held by the
-- database, and the waiting-bookings limit).

-- departs from seed: addition. Single-use WebSocket tickets (`POST /v1/ws/tickets`): browsers
-- cannot set headers on a WebSocket, so they trade their bearer token for a ticket valid 30 s
-- and put that in the URL instead of the token. Only the SHA-256 digest is stored. The ticket
-- stands for the token that made it: revoking the token deletes its tickets.
CREATE UNLOGGED TABLE ws_tickets (
    digest VARCHAR(64) PRIMARY KEY,
    token_id BIGINT NOT NULL REFERENCES personal_access_tokens(id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_ws_tickets_expires ON ws_tickets (expires_at);
CREATE INDEX idx_ws_tickets_token ON ws_tickets (token_id);

-- departs from seed: addition. promo_codes.per_user_limit is enforced by the database, so
-- concurrent bookings by one customer cannot each take a use: inserting a usage locks the promo
-- code's row (serialising its uses) and counts that user's uses first.
CREATE OR REPLACE FUNCTION enforce_promo_per_user_limit()
RETURNS TRIGGER AS $$
DECLARE
    per_user INTEGER;
    used BIGINT;
BEGIN
    SELECT COALESCE(per_user_limit, 1) INTO per_user
    FROM promo_codes WHERE id = NEW.promo_code_id FOR UPDATE;
    SELECT count(*) INTO used
    FROM promo_code_usages WHERE promo_code_id = NEW.promo_code_id AND user_id = NEW.user_id;
    IF used >= per_user THEN
        RAISE EXCEPTION 'promo code % already used % time(s) by user %', NEW.promo_code_id, used, NEW.user_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'promo_code_per_user_limit';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_promo_code_usages_per_user_limit
BEFORE INSERT ON promo_code_usages
FOR EACH ROW
EXECUTE FUNCTION enforce_promo_per_user_limit();

-- departs from seed: addition. How many bookings one customer may have waiting for a therapist.
INSERT INTO app_settings (key, value, description) VALUES
('max_pending_bookings', '2', 'Most bookings one customer may have waiting for a therapist (pending)')
ON CONFLICT (key) DO NOTHING;
