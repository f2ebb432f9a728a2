-- Records the accepted therapist's distance and travel time on the booking's location.
UPDATE booking_locations
SET distance_km = round(($2 / 1000.0)::numeric, 2), estimated_travel_time_minutes = $3
WHERE booking_id = $1
