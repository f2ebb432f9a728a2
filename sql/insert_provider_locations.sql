-- One batch of location pings. Arrays are parallel, one element per ping. The location column
-- is filled by trg_update_provider_location from latitude/longitude, as for any other insert.
-- A ping already stored (same provider, client seq and fix time) is skipped: exactly-once.
INSERT INTO provider_locations
    (provider_id, client_seq, latitude, longitude, accuracy, heading, speed, is_moving,
     battery_level, created_at)
SELECT provider_id, client_seq, latitude, longitude, accuracy, heading, speed, is_moving,
       battery_level, created_at
FROM UNNEST(
    $1::bigint[], $2::bigint[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
    $7::float8[], $8::bool[], $9::int[], $10::timestamptz[]
) AS p(provider_id, client_seq, latitude, longitude, accuracy, heading, speed, is_moving,
       battery_level, created_at)
ON CONFLICT DO NOTHING
