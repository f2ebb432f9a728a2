-- Hilot schema, part 2: user management (seed section 3.1).
-- users, personal_access_tokens, user_addresses, roles, permissions,
-- model_has_roles, model_has_permissions, role_has_permissions.
-- (The "wallet per new user" trigger on users lives in the payments
-- migration, next to the wallets table it inserts into.)

-- ---------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    phone VARCHAR(20) UNIQUE NOT NULL,
    phone_verified_at TIMESTAMPTZ,
    email VARCHAR(255) UNIQUE,
    email_verified_at TIMESTAMPTZ,
    password VARCHAR(255),

    -- Profile
    first_name VARCHAR(100),
    last_name VARCHAR(100),
    gender user_gender,
    date_of_birth DATE,
    profile_photo_url TEXT,

    -- Status
    is_active BOOLEAN DEFAULT TRUE,
    is_verified BOOLEAN DEFAULT FALSE,
    last_active_at TIMESTAMPTZ,

    -- Preferences
    preferred_language VARCHAR(5) DEFAULT 'en',
    notification_preferences JSONB DEFAULT '{}',

    -- Authentication
    remember_token VARCHAR(100),
    two_factor_secret TEXT,
    two_factor_recovery_codes TEXT,

    -- Timestamps
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ
);

-- idx_users_phone / idx_users_email / idx_users_uuid duplicate the indexes
-- behind the UNIQUE constraints above; kept for fidelity with the seed
-- (they cost a little write overhead and could be dropped later).
CREATE INDEX idx_users_phone ON users (phone);
CREATE INDEX idx_users_email ON users (email);
CREATE INDEX idx_users_uuid ON users (uuid);
CREATE INDEX idx_users_active ON users (is_active, deleted_at);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_users_touch_updated_at
BEFORE UPDATE ON users
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- personal_access_tokens
-- ---------------------------------------------------------------------------
CREATE TABLE personal_access_tokens (
    id BIGSERIAL PRIMARY KEY,
    tokenable_type VARCHAR(255) NOT NULL,
    tokenable_id BIGINT NOT NULL,
    name VARCHAR(255) NOT NULL,
    -- Only the SHA-256 hex digest of the bearer token is stored (exactly 64
    -- chars), never the token itself; lookups hash the presented token first.
    token VARCHAR(64) UNIQUE NOT NULL,
    abilities TEXT,
    last_used_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_tokenable ON personal_access_tokens (tokenable_type, tokenable_id);
-- Duplicates the UNIQUE(token) index; kept for fidelity with the seed.
CREATE INDEX idx_token ON personal_access_tokens (token);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_personal_access_tokens_touch_updated_at
BEFORE UPDATE ON personal_access_tokens
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- user_addresses
-- ---------------------------------------------------------------------------
CREATE TABLE user_addresses (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label VARCHAR(50) DEFAULT 'home', -- home, work, other
    address_line1 VARCHAR(255) NOT NULL,
    address_line2 VARCHAR(255),
    city VARCHAR(100) NOT NULL,
    province VARCHAR(100),
    postal_code VARCHAR(10),
    country VARCHAR(2) DEFAULT 'PH',

    -- Geolocation
    latitude NUMERIC(10, 8) NOT NULL,
    longitude NUMERIC(11, 8) NOT NULL,
    location GEOGRAPHY(POINT, 4326), -- PostGIS, maintained by trigger below

    is_default BOOLEAN DEFAULT FALSE,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_user_addresses_user ON user_addresses (user_id);
-- Also listed in section 4.2 under the same name and definition: created once.
CREATE INDEX idx_user_addresses_location ON user_addresses USING GIST (location);

-- Trigger to update PostGIS geography column
CREATE OR REPLACE FUNCTION update_user_address_location()
RETURNS TRIGGER AS $$
BEGIN
    NEW.location = ST_SetSRID(ST_MakePoint(NEW.longitude, NEW.latitude), 4326)::geography;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_update_user_address_location
BEFORE INSERT OR UPDATE ON user_addresses
FOR EACH ROW
EXECUTE FUNCTION update_user_address_location();

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_user_addresses_touch_updated_at
BEFORE UPDATE ON user_addresses
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- roles & permissions (Spatie Laravel Permission layout)
-- ---------------------------------------------------------------------------
CREATE TABLE roles (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(255) UNIQUE NOT NULL, -- customer, therapist, store_owner, admin, super_admin
    guard_name VARCHAR(255) NOT NULL DEFAULT 'api',
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_roles_touch_updated_at
BEFORE UPDATE ON roles
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

CREATE TABLE permissions (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(255) UNIQUE NOT NULL,
    guard_name VARCHAR(255) NOT NULL DEFAULT 'api',
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_permissions_touch_updated_at
BEFORE UPDATE ON permissions
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

CREATE TABLE model_has_roles (
    role_id BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    model_type VARCHAR(255) NOT NULL,
    model_id BIGINT NOT NULL,
    PRIMARY KEY (role_id, model_id, model_type)
);

CREATE INDEX idx_model_has_roles ON model_has_roles (model_id, model_type);

CREATE TABLE model_has_permissions (
    permission_id BIGINT NOT NULL REFERENCES permissions(id) ON DELETE CASCADE,
    model_type VARCHAR(255) NOT NULL,
    model_id BIGINT NOT NULL,
    PRIMARY KEY (permission_id, model_id, model_type)
);

CREATE TABLE role_has_permissions (
    permission_id BIGINT NOT NULL REFERENCES permissions(id) ON DELETE CASCADE,
    role_id BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (permission_id, role_id)
);
