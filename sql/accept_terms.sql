-- What the accept prices the booking with, in one read: the therapist's terms for the
-- booking's service and their own commission rate ($1 provider, $2 service), the promo code
-- reserved for the booking if any ($3), and the operator's fee and default commission
-- (app_settings `platform_fee` and `commission_rate`, parsed as DispatchSettings does).
SELECT ps.price, ps.base_distance_km, ps.per_km_surcharge, ps.updated_at AS terms_updated_at, p.commission_rate,
       promo.discount_type AS promo_kind, promo.discount_value AS promo_value,
       promo.max_discount_amount AS promo_max, promo.min_booking_amount AS promo_min,
       (SELECT value FROM app_settings WHERE key = 'platform_fee') AS platform_fee_setting,
       (SELECT value FROM app_settings WHERE key = 'commission_rate') AS commission_rate_setting
FROM provider_services ps
JOIN providers p ON p.id = ps.provider_id
LEFT JOIN LATERAL (
    SELECT pc.discount_type::text AS discount_type, pc.discount_value, pc.max_discount_amount,
           pc.min_booking_amount
    FROM promo_code_usages u
    JOIN promo_codes pc ON pc.id = u.promo_code_id
    WHERE u.booking_id = $3
    LIMIT 1
) promo ON true
WHERE ps.provider_id = $1 AND ps.service_id = $2
