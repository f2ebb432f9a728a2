-- Verified, active stores selling a service in store, within a radius, nearest first.
-- $1 lat, $2 lng, $3 service id, $4 radius (m), $5 limit.
-- `ORDER BY location <-> point` is a KNN scan of the GiST index on store_profiles.location
-- (idx_store_location): the index yields stores nearest first and the scan stops at the limit;
-- ST_DWithin prunes by the same index. Distances are geodesic (geography's spheroid).
WITH here AS (SELECT ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography AS point)
SELECT p.uuid, sp.store_name, sp.address_line1, sp.city,
       sp.latitude::float8 AS lat, sp.longitude::float8 AS lng,
       ST_Distance(sp.location, here.point) AS distance_m,
       ps.price, COALESCE(s.currency, 'PHP') AS currency,
       COALESCE(s.duration_minutes, 60) AS duration_minutes,
       sp.timezone, sp.operating_hours, COALESCE(sp.number_of_rooms, 1) AS number_of_rooms,
       sp.amenities, COALESCE(p.average_rating, 0) AS average_rating
FROM here, store_profiles sp
JOIN providers p ON p.id = sp.provider_id
JOIN provider_services ps ON ps.provider_id = p.id AND ps.service_id = $3
JOIN services s ON s.id = ps.service_id
WHERE ST_DWithin(sp.location, here.point, $4)
  AND p.type = 'store'
  AND p.verification_status = 'verified'
  AND p.is_active IS NOT FALSE
  AND p.deleted_at IS NULL
  AND ps.store_service_enabled IS TRUE
  AND ps.is_available IS NOT FALSE
ORDER BY sp.location <-> here.point, p.id
LIMIT $5
