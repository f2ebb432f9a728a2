-- Hilot schema, part 3: provider management (seed section 3.2), except
-- provider_locations, which is partitioned and has its own migration.
-- providers, therapist_profiles, store_profiles, provider_documents.

-- ---------------------------------------------------------------------------
-- providers
-- ---------------------------------------------------------------------------
CREATE TABLE providers (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID UNIQUE NOT NULL DEFAULT gen_random_uuid(),
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type provider_type NOT NULL,

    -- Verification
    verification_status verification_status DEFAULT 'pending',
    verified_at TIMESTAMPTZ,
    verified_by BIGINT REFERENCES users(id),
    rejection_reason TEXT,

    -- Status
    is_active BOOLEAN DEFAULT TRUE,
    is_available BOOLEAN DEFAULT FALSE, -- for therapists (online/offline)
    accepts_home_service BOOLEAN DEFAULT TRUE,
    accepts_store_service BOOLEAN DEFAULT FALSE,

    -- Business details
    business_name VARCHAR(255),
    business_registration_number VARCHAR(100),
    tax_id VARCHAR(50),

    -- Rating & Stats
    average_rating NUMERIC(3, 2) DEFAULT 0.00,
    total_reviews INTEGER DEFAULT 0,
    total_bookings INTEGER DEFAULT 0,
    total_earnings NUMERIC(12, 2) DEFAULT 0.00,

    -- Commission
    commission_rate NUMERIC(5, 2) DEFAULT 15.00, -- percentage

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ
);

CREATE INDEX idx_providers_user ON providers (user_id);
CREATE INDEX idx_providers_type ON providers (type);
CREATE INDEX idx_providers_status ON providers (verification_status, is_active);
-- Inline definition of the seed (section 3.2): composite (is_available, type).
CREATE INDEX idx_providers_available ON providers (is_available, type);

-- Section 4 indexes on providers.
-- departs from seed: section 4.1 reuses the name idx_providers_available for a
-- different, partial index; both meanings are kept, the partial one renamed
-- to idx_providers_available_partial (one relation name cannot hold both).
CREATE INDEX idx_providers_available_partial ON providers (is_available)
    WHERE is_available = TRUE AND deleted_at IS NULL;
-- Active providers only (4.3)
CREATE INDEX idx_providers_active ON providers (id)
    WHERE is_active = TRUE AND deleted_at IS NULL;
-- Available therapists for matching (4.3)
CREATE INDEX idx_providers_available_therapists ON providers (id, user_id)
    WHERE type = 'therapist' AND is_available = TRUE AND verification_status = 'verified';

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_providers_touch_updated_at
BEFORE UPDATE ON providers
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- therapist_profiles
-- ---------------------------------------------------------------------------
CREATE TABLE therapist_profiles (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,

    -- Professional info
    license_number VARCHAR(100),
    license_type VARCHAR(100), -- PRC, TESDA, etc.
    license_expiry_date DATE,
    years_of_experience INTEGER,
    specializations JSONB, -- ["Swedish", "Deep Tissue", "Sports", "Aromatherapy"]
    certifications JSONB, -- [{name: "", issuer: "", date: ""}]
    languages_spoken JSONB DEFAULT '["en", "fil"]',

    -- Bio
    bio TEXT,
    professional_photo_url TEXT,

    -- Service area (for home service)
    service_radius_km INTEGER DEFAULT 5, -- max distance willing to travel
    base_location_latitude NUMERIC(10, 8),
    base_location_longitude NUMERIC(11, 8),
    base_location GEOGRAPHY(POINT, 4326), -- PostGIS, maintained by trigger below

    -- Availability
    default_schedule JSONB, -- {monday: [{start: "09:00", end: "18:00"}], ...}

    -- Equipment
    has_own_equipment BOOLEAN DEFAULT TRUE,
    equipment_list JSONB,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    UNIQUE (provider_id)
);

-- Inline name of the seed (3.2) ...
CREATE INDEX idx_therapist_base_location ON therapist_profiles USING GIST (base_location);
-- ... and the section 4.2 name for the same definition. Both names are kept
-- for fidelity; they are identical, so one could be dropped later (the table
-- is small and rarely written, the duplicate costs little).
CREATE INDEX idx_therapist_profiles_base_location ON therapist_profiles USING GIST (base_location);

-- Trigger for base_location
CREATE OR REPLACE FUNCTION update_therapist_base_location()
RETURNS TRIGGER AS $$
BEGIN
    IF NEW.base_location_latitude IS NOT NULL AND NEW.base_location_longitude IS NOT NULL THEN
        NEW.base_location = ST_SetSRID(ST_MakePoint(NEW.base_location_longitude, NEW.base_location_latitude), 4326)::geography;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_update_therapist_base_location
BEFORE INSERT OR UPDATE ON therapist_profiles
FOR EACH ROW
EXECUTE FUNCTION update_therapist_base_location();

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_therapist_profiles_touch_updated_at
BEFORE UPDATE ON therapist_profiles
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- store_profiles
-- ---------------------------------------------------------------------------
CREATE TABLE store_profiles (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,

    -- Store details
    store_name VARCHAR(255) NOT NULL,
    description TEXT,
    logo_url TEXT,
    cover_photo_url TEXT,
    photos JSONB, -- array of image URLs

    -- Location
    address_line1 VARCHAR(255) NOT NULL,
    address_line2 VARCHAR(255),
    city VARCHAR(100) NOT NULL,
    province VARCHAR(100),
    postal_code VARCHAR(10),
    latitude NUMERIC(10, 8) NOT NULL,
    longitude NUMERIC(11, 8) NOT NULL,
    location GEOGRAPHY(POINT, 4326), -- PostGIS, maintained by trigger below

    -- Contact
    phone VARCHAR(20),
    email VARCHAR(255),
    website VARCHAR(255),

    -- Operating hours
    operating_hours JSONB, -- {monday: {open: "09:00", close: "21:00", closed: false}, ...}

    -- Facilities
    amenities JSONB, -- ["WiFi", "Parking", "Shower", "Sauna", "Lockers"]
    number_of_rooms INTEGER DEFAULT 1,
    payment_methods JSONB, -- ["Cash", "Card", "GCash", "PayMaya"]

    -- Policies
    cancellation_policy TEXT,
    house_rules TEXT,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    UNIQUE (provider_id)
);

-- Inline name of the seed (3.2) and the section 4.2 name for the same
-- definition; both kept for fidelity (identical, one could be dropped later).
CREATE INDEX idx_store_location ON store_profiles USING GIST (location);
CREATE INDEX idx_store_profiles_location ON store_profiles USING GIST (location);

-- Trigger for store location
CREATE OR REPLACE FUNCTION update_store_location()
RETURNS TRIGGER AS $$
BEGIN
    NEW.location = ST_SetSRID(ST_MakePoint(NEW.longitude, NEW.latitude), 4326)::geography;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_update_store_location
BEFORE INSERT OR UPDATE ON store_profiles
FOR EACH ROW
EXECUTE FUNCTION update_store_location();

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_store_profiles_touch_updated_at
BEFORE UPDATE ON store_profiles
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- provider_documents
-- ---------------------------------------------------------------------------
CREATE TABLE provider_documents (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    document_type VARCHAR(50) NOT NULL, -- government_id, license, nbi_clearance, health_cert, etc.
    file_url TEXT NOT NULL,
    file_name VARCHAR(255),
    file_size BIGINT, -- bytes
    mime_type VARCHAR(100),

    -- Verification
    verification_status document_verification_status DEFAULT 'pending',
    verified_at TIMESTAMPTZ,
    verified_by BIGINT REFERENCES users(id),
    rejection_reason TEXT,

    -- Expiry (for licenses, health certs)
    expiry_date DATE,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_provider_documents_provider ON provider_documents (provider_id);
CREATE INDEX idx_provider_documents_type ON provider_documents (document_type);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_provider_documents_touch_updated_at
BEFORE UPDATE ON provider_documents
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();
