-- Hilot schema, part 8: reviews & communications (seed sections 3.6, 3.7).
-- reviews (+ provider rating trigger), messages, notifications, device_tokens.

-- ---------------------------------------------------------------------------
-- reviews
-- ---------------------------------------------------------------------------
CREATE TABLE reviews (
    id BIGSERIAL PRIMARY KEY,
    booking_id BIGINT NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,

    reviewer_id BIGINT NOT NULL REFERENCES users(id), -- customer or provider
    reviewee_id BIGINT NOT NULL REFERENCES users(id), -- provider or customer
    reviewer_type reviewer_type NOT NULL,

    -- Rating (1-5 stars)
    overall_rating INTEGER NOT NULL CHECK (overall_rating >= 1 AND overall_rating <= 5),

    -- Detailed ratings (optional)
    professionalism_rating INTEGER CHECK (professionalism_rating >= 1 AND professionalism_rating <= 5),
    communication_rating INTEGER CHECK (communication_rating >= 1 AND communication_rating <= 5),
    timeliness_rating INTEGER CHECK (timeliness_rating >= 1 AND timeliness_rating <= 5),
    quality_rating INTEGER CHECK (quality_rating >= 1 AND quality_rating <= 5),

    -- Review content
    comment TEXT,
    tags JSONB, -- ["Professional", "On-time", "Great technique"]

    -- Moderation
    is_visible BOOLEAN DEFAULT TRUE,
    is_flagged BOOLEAN DEFAULT FALSE,
    flagged_reason TEXT,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ,

    UNIQUE (booking_id, reviewer_id)
);

-- Leading column of UNIQUE(booking_id, reviewer_id) already covers
-- booking_id; kept for fidelity with the seed.
CREATE INDEX idx_reviews_booking ON reviews (booking_id);
CREATE INDEX idx_reviews_reviewee ON reviews (reviewee_id);
CREATE INDEX idx_reviews_rating ON reviews (overall_rating);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_reviews_touch_updated_at
BEFORE UPDATE ON reviews
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- recompute_provider_rating(provider_user_id bigint)
-- Recomputes average_rating / total_reviews of the provider(s) whose
-- users.id is provider_user_id from that user's customer reviews.
-- (Reviews point at users, not providers: a user owning several provider
-- rows gets the same figures on each, exactly as in the seed.)
CREATE OR REPLACE FUNCTION recompute_provider_rating(provider_user_id BIGINT)
RETURNS void AS $$
DECLARE
    avg_rating NUMERIC(3, 2);
    review_count INTEGER;
BEGIN
    -- Lock the provider row(s) first: two reviews committed concurrently for
    -- the same provider then recompute one after the other, and the second
    -- (a new statement, hence a new snapshot under READ COMMITTED) sees the
    -- first one's review, so no review is lost from the average.
    PERFORM 1 FROM providers p
    WHERE p.user_id = provider_user_id
    ORDER BY p.id
    FOR UPDATE;

    -- Only reviews that are shown count: hidden (is_visible false) and
    -- soft-deleted reviews are excluded from the public rating.
    SELECT COALESCE(ROUND(AVG(r.overall_rating), 2), 0), COUNT(*)
    INTO avg_rating, review_count
    FROM reviews r
    WHERE r.reviewee_id = provider_user_id
      AND r.reviewer_type = 'customer'
      AND r.is_visible = TRUE
      AND r.deleted_at IS NULL;

    UPDATE providers p
    SET average_rating = avg_rating,
        total_reviews = review_count
    WHERE p.user_id = provider_user_id;
END;
$$ LANGUAGE plpgsql;

-- Trigger to update provider rating.
-- departs from seed: the seed selected bookings.provider_id (a providers.id)
-- into provider_user_id and compared it with reviews.reviewee_id and
-- providers.user_id (users.id values), so it updated the wrong provider or
-- none. Fixed: look up the provider's user_id via the booking, average that
-- user's visible, non-deleted customer reviews (rounded to 2 decimals, 0 when
-- there are none) and update providers with that user_id.
-- departs from seed: also fires on DELETE, and on UPDATEs that move a review
-- away from being a customer review (the seed's WHEN clause could not see
-- those); the customer-only filter moved into the function because a WHEN
-- clause may not mention NEW in a DELETE trigger or OLD in an INSERT one.
CREATE OR REPLACE FUNCTION update_provider_rating()
RETURNS TRIGGER AS $$
DECLARE
    provider_user_id BIGINT;
    affected BIGINT[] := '{}';
    rev RECORD;
BEGIN
    FOR rev IN
        SELECT NEW.booking_id AS booking_id, NEW.reviewee_id AS reviewee_id
        WHERE TG_OP IN ('INSERT', 'UPDATE') AND NEW.reviewer_type = 'customer'
        UNION ALL
        SELECT OLD.booking_id, OLD.reviewee_id
        WHERE TG_OP IN ('UPDATE', 'DELETE') AND OLD.reviewer_type = 'customer'
    LOOP
        -- Get the provider's user id from the booking (providers.user_id).
        provider_user_id := NULL;
        SELECT p.user_id INTO provider_user_id
        FROM bookings b
        JOIN providers p ON b.provider_id = p.id
        WHERE b.id = rev.booking_id;

        -- The booking can already be gone (reviews are deleted by ON DELETE
        -- CASCADE from bookings): fall back to the review's reviewee, which
        -- for a customer review is the provider's user.
        provider_user_id := COALESCE(provider_user_id, rev.reviewee_id);

        IF provider_user_id IS NOT NULL AND NOT provider_user_id = ANY (affected) THEN
            affected := affected || provider_user_id;
            PERFORM recompute_provider_rating(provider_user_id);
        END IF;
    END LOOP;

    RETURN NULL; -- AFTER trigger: return value ignored
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_update_provider_rating
AFTER INSERT OR UPDATE OR DELETE ON reviews
FOR EACH ROW
EXECUTE FUNCTION update_provider_rating();

-- ---------------------------------------------------------------------------
-- messages
-- ---------------------------------------------------------------------------
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),

    booking_id BIGINT NOT NULL REFERENCES bookings(id) ON DELETE CASCADE,
    sender_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    receiver_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,

    message TEXT NOT NULL,

    -- Attachments
    attachment_type VARCHAR(50), -- image, location
    attachment_url TEXT,
    attachment_metadata JSONB,

    -- Status
    is_read BOOLEAN DEFAULT FALSE,
    read_at TIMESTAMPTZ,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ
);

CREATE INDEX idx_messages_booking ON messages (booking_id);
CREATE INDEX idx_messages_sender ON messages (sender_id);
CREATE INDEX idx_messages_receiver ON messages (receiver_id);
CREATE INDEX idx_messages_created ON messages (created_at);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_messages_touch_updated_at
BEFORE UPDATE ON messages
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- notifications
-- ---------------------------------------------------------------------------
CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),

    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,

    type VARCHAR(100) NOT NULL, -- booking_confirmed, therapist_en_route, etc.
    title VARCHAR(255) NOT NULL,
    body TEXT NOT NULL,

    -- Action
    action_type VARCHAR(50), -- open_booking, open_chat, etc.
    action_data JSONB,

    -- Channels
    sent_via JSONB DEFAULT '[]', -- ["push", "sms", "email"]

    -- Status
    is_read BOOLEAN DEFAULT FALSE,
    read_at TIMESTAMPTZ,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_notifications_user ON notifications (user_id);
CREATE INDEX idx_notifications_read ON notifications (is_read);
CREATE INDEX idx_notifications_created ON notifications (created_at);

-- ---------------------------------------------------------------------------
-- device_tokens (push notifications)
-- ---------------------------------------------------------------------------
CREATE TABLE device_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,

    device_type device_type NOT NULL,
    token TEXT NOT NULL,

    device_name VARCHAR(255),
    device_os_version VARCHAR(50),
    app_version VARCHAR(50),

    is_active BOOLEAN DEFAULT TRUE,
    last_used_at TIMESTAMPTZ,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    UNIQUE (user_id, token)
);

-- Leading column of UNIQUE(user_id, token) already covers user_id; kept for
-- fidelity with the seed.
CREATE INDEX idx_device_tokens_user ON device_tokens (user_id);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_device_tokens_touch_updated_at
BEFORE UPDATE ON device_tokens
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();
