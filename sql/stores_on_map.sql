-- Stores inside a bounding box ($1 west, $2 south, $3 east, $4 north) for the dispatch map,
-- with the rooms their live visits hold right now.
SELECT p.uuid AS store_id, sp.store_name, sp.latitude::float8 AS lat, sp.longitude::float8 AS lng,
       COALESCE(sp.number_of_rooms, 1) AS number_of_rooms,
       (SELECT count(*)
          FROM store_visits v JOIN bookings b ON b.id = v.booking_id
         WHERE v.store_provider_id = p.id AND v.slot @> now()
           AND b.status IN ('pending', 'accepted', 'arrived', 'in_progress')) AS rooms_in_use,
       p.verification_status::text AS verification_status
FROM store_profiles sp
JOIN providers p ON p.id = sp.provider_id
WHERE p.type = 'store' AND p.deleted_at IS NULL AND p.is_active IS NOT FALSE
  AND sp.location && ST_MakeEnvelope($1, $2, $3, $4, 4326)::geography
ORDER BY p.id
LIMIT 2000
