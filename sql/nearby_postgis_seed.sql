-- Seed section 6.1 "Find nearby available therapists", parameterised:
--   $1 longitude (float8), $2 latitude (float8),
--   $3 radius in metres (float8), $4 max rows (int8).
-- Otherwise the seed's query as written (distance from the therapist's
-- base_location, nearest first); used as the baseline for benchmarking.
SELECT
    p.id,
    u.first_name,
    u.last_name,
    tp.specializations,
    p.average_rating,
    ST_Distance(
        tp.base_location,
        ST_SetSRID(ST_MakePoint($1::float8, $2::float8), 4326)::geography
    ) / 1000 AS distance_km
FROM providers p
JOIN users u ON p.user_id = u.id
JOIN therapist_profiles tp ON p.id = tp.provider_id
WHERE p.type = 'therapist'
  AND p.is_available = TRUE
  AND p.verification_status = 'verified'
  AND ST_DWithin(
      tp.base_location,
      ST_SetSRID(ST_MakePoint($1::float8, $2::float8), 4326)::geography,
      $3::float8
  )
ORDER BY distance_km ASC
LIMIT $4::int8;
