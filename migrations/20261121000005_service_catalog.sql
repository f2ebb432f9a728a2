-- Hilot schema, part 5: service catalog (seed section 3.3).
-- service_categories, services, provider_services.

-- ---------------------------------------------------------------------------
-- service_categories
-- ---------------------------------------------------------------------------
CREATE TABLE service_categories (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    slug VARCHAR(100) UNIQUE NOT NULL,
    description TEXT,
    icon_url TEXT,
    sort_order INTEGER DEFAULT 0,
    is_active BOOLEAN DEFAULT TRUE,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

-- Duplicates the UNIQUE(slug) index; kept for fidelity with the seed.
CREATE INDEX idx_service_categories_slug ON service_categories (slug);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_service_categories_touch_updated_at
BEFORE UPDATE ON service_categories
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- services
-- ---------------------------------------------------------------------------
CREATE TABLE services (
    id BIGSERIAL PRIMARY KEY,
    category_id BIGINT REFERENCES service_categories(id) ON DELETE SET NULL,

    name VARCHAR(255) NOT NULL,
    slug VARCHAR(255) UNIQUE NOT NULL,
    description TEXT,
    short_description VARCHAR(500),

    -- Pricing (base prices, can be overridden by providers)
    base_price NUMERIC(10, 2) NOT NULL,
    currency VARCHAR(3) DEFAULT 'PHP',

    -- Duration
    duration_minutes INTEGER NOT NULL, -- 30, 60, 90, 120

    -- Media
    image_url TEXT,

    -- Metadata
    benefits JSONB, -- ["Reduces stress", "Improves circulation"]
    contraindications JSONB, -- ["Pregnancy", "Recent surgery"]

    is_active BOOLEAN DEFAULT TRUE,
    sort_order INTEGER DEFAULT 0,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ
);

CREATE INDEX idx_services_category ON services (category_id);
-- Duplicates the UNIQUE(slug) index; kept for fidelity with the seed.
CREATE INDEX idx_services_slug ON services (slug);
CREATE INDEX idx_services_active ON services (is_active);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_services_touch_updated_at
BEFORE UPDATE ON services
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------
-- provider_services
-- ---------------------------------------------------------------------------
CREATE TABLE provider_services (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    service_id BIGINT NOT NULL REFERENCES services(id) ON DELETE CASCADE,

    -- Custom pricing
    price NUMERIC(10, 2) NOT NULL,

    -- Availability
    is_available BOOLEAN DEFAULT TRUE,

    -- Service-specific settings
    home_service_enabled BOOLEAN DEFAULT TRUE,
    store_service_enabled BOOLEAN DEFAULT FALSE,

    -- Distance surcharge (for home service)
    base_distance_km INTEGER DEFAULT 5,
    per_km_surcharge NUMERIC(8, 2) DEFAULT 0.00,
    max_travel_distance_km INTEGER DEFAULT 10,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,

    UNIQUE (provider_id, service_id)
);

-- Leading column of UNIQUE(provider_id, service_id) already covers
-- provider_id; kept for fidelity with the seed.
CREATE INDEX idx_provider_services_provider ON provider_services (provider_id);
CREATE INDEX idx_provider_services_service ON provider_services (service_id);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_provider_services_touch_updated_at
BEFORE UPDATE ON provider_services
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();
