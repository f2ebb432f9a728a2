-- Creates or replaces a store's profile; `location` is filled by trg_update_store_location.
INSERT INTO store_profiles
    (provider_id, store_name, description, address_line1, address_line2, city, province,
     postal_code, latitude, longitude, phone, email, website, operating_hours, amenities,
     number_of_rooms, payment_methods, cancellation_policy, house_rules, timezone)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
        COALESCE($15, '[]'::jsonb), $16, COALESCE($17, '[]'::jsonb), $18, $19, $20)
ON CONFLICT (provider_id) DO UPDATE SET
    store_name = EXCLUDED.store_name,
    description = EXCLUDED.description,
    address_line1 = EXCLUDED.address_line1,
    address_line2 = EXCLUDED.address_line2,
    city = EXCLUDED.city,
    province = EXCLUDED.province,
    postal_code = EXCLUDED.postal_code,
    latitude = EXCLUDED.latitude,
    longitude = EXCLUDED.longitude,
    phone = EXCLUDED.phone,
    email = EXCLUDED.email,
    website = EXCLUDED.website,
    operating_hours = EXCLUDED.operating_hours,
    amenities = COALESCE($15, store_profiles.amenities),
    number_of_rooms = EXCLUDED.number_of_rooms,
    payment_methods = COALESCE($17, store_profiles.payment_methods),
    cancellation_policy = EXCLUDED.cancellation_policy,
    house_rules = EXCLUDED.house_rules,
    timezone = EXCLUDED.timezone
