-- A home-service booking and its location, in one statement. Nothing is inserted when a
-- concurrent request with the same idempotency key ($13) committed first: no id comes back.
-- $1 customer, $2 service, $3 scheduled_at, $4..$11 the estimated price, $12 notes, $14 the
-- request's hash, $15 payment method, $16 `now` | `scheduled`, $17 the named therapist,
-- $18 when their answer is due, $19 duration and $20 buffer minutes; $21..$25 the place (address, unit, landmark, latitude, longitude);
-- $26 the most the customer accepts for the service and travel surcharge (NULL: any).
WITH booking AS (
    INSERT INTO bookings (customer_id, service_id, type, booking_type, scheduled_at, status,
        service_price, distance_surcharge, platform_fee, promo_discount, total_amount,
        provider_earnings, commission_amount, commission_rate, customer_notes, idempotency_key,
        idempotency_request_hash, payment_method, requested_provider_id, request_expires_at,
        duration_minutes, buffer_minutes, max_service_amount)
    VALUES ($1, $2, 'home_service', $16::booking_schedule_type, $3, 'pending', $4, $5, $6, $7,
        $8, $9, $10, $11, $12, $13, $14, $15, $17, $18, $19, $20, $26)
    ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), place AS (
    INSERT INTO booking_locations (booking_id, address, unit_number, landmark, latitude, longitude)
    SELECT id, $21, $22, $23, $24, $25 FROM booking
)
SELECT id FROM booking
