-- A booking's latest $2 messages, oldest first, for a dispatcher: which side wrote each (or a
-- dispatcher, and to whom). $1 booking id (internal).
SELECT uuid, booking_uuid, from_customer, from_dispatcher, to_customer, message, created_at, read_at
FROM (
    SELECT m.id, m.uuid, b.uuid AS booking_uuid, m.sender_id = b.customer_id AS from_customer,
           m.from_dispatcher, m.receiver_id = b.customer_id AS to_customer,
           m.message, m.created_at, m.read_at
    FROM messages m
    JOIN bookings b ON b.id = m.booking_id
    WHERE m.booking_id = $1 AND m.deleted_at IS NULL
    ORDER BY m.id DESC
    LIMIT $2
) recent
ORDER BY id
