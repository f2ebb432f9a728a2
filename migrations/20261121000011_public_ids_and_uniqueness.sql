-- Hilot schema, part 11: public ids for rows the API names.
-- The client contract exposes only UUIDs ("internal BIGSERIAL ids never leave the server"), but
-- the seed gives user_addresses, services and service_categories no uuid column.

-- departs from seed: addresses are addressed by clients (DELETE /v1/me/addresses/{id}).
ALTER TABLE user_addresses ADD COLUMN uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid();

-- departs from seed: services are named by id in bookings and therapist set-up.
ALTER TABLE services ADD COLUMN uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid();

-- departs from seed: categories appear in the catalog answer.
ALTER TABLE service_categories ADD COLUMN uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid();

-- departs from seed: only one default address per user, enforced by the database (the seed's
-- is_default flag alone lets two addresses both claim it).
CREATE UNIQUE INDEX uq_user_addresses_one_default ON user_addresses (user_id) WHERE is_default;


-- departs from seed: a user has at most one live provider of each type, so a therapist's
-- concurrent first profile saves cannot create two providers.
CREATE UNIQUE INDEX uq_providers_one_per_user_type ON providers (user_id, type) WHERE deleted_at IS NULL;
