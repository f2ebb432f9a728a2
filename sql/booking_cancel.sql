-- Cancels a booking still in the status the caller read ($2): compare-and-set.
UPDATE bookings
SET status = 'cancelled', cancelled_at = now(), cancelled_by = $3,
    cancellation_reason = $4, cancellation_fee = $5
WHERE id = $1 AND status = $2
