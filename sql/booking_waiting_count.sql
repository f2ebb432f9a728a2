-- Inside a new booking's transaction, once the customer ($1) is locked: how many of their
-- bookings wait for a therapist, and, in the same round trip, their idempotency key $2 is
-- freed on a booking older than the window ($3), so the key may be used again.
WITH freed_key AS (
    UPDATE bookings SET idempotency_key = NULL
    WHERE customer_id = $1 AND idempotency_key = $2 AND created_at < $3
)
SELECT count(*) FROM bookings WHERE customer_id = $1 AND status = 'pending' AND deleted_at IS NULL
