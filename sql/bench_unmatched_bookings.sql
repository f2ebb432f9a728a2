-- scripts/bench: :count pending "book now" bookings in Cebu City, where no therapist is, for
-- one benchmark customer. Run with psql -v count=1000.
WITH customer AS (
    INSERT INTO users (phone, first_name) VALUES ('+639400000001', 'Bench')
    ON CONFLICT (phone) DO UPDATE SET first_name = EXCLUDED.first_name
    RETURNING id
), booked AS (
    INSERT INTO bookings (customer_id, service_id, type, booking_type, service_price,
                          total_amount, provider_earnings, commission_amount, commission_rate)
    SELECT (SELECT id FROM customer), (SELECT id FROM services ORDER BY id LIMIT 1),
           'home_service', 'now', 800, 800, 680, 120, 15
    FROM generate_series(1, :count)
    RETURNING id
)
INSERT INTO booking_locations (booking_id, address, latitude, longitude)
SELECT id, 'Benchmark address, Cebu City', 10.25 + random() * 0.15, 123.85 + random() * 0.10
FROM booked;
