-- The promo terms reserved for a booking, if any.
SELECT pc.discount_type::text, pc.discount_value, pc.max_discount_amount, pc.min_booking_amount
FROM promo_code_usages u
JOIN promo_codes pc ON pc.id = u.promo_code_id
WHERE u.booking_id = $1
