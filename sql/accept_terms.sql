-- The therapist's terms for the booking's service and their own commission rate, if any.
SELECT ps.price, ps.base_distance_km, ps.per_km_surcharge, p.commission_rate
FROM provider_services ps
JOIN providers p ON p.id = ps.provider_id
WHERE ps.provider_id = $1 AND ps.service_id = $2
