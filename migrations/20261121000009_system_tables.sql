-- Hilot schema, part 9: system tables (seed section 3.8).
-- app_settings (+ its seed rows), audit_logs.

-- ---------------------------------------------------------------------------
-- app_settings
-- ---------------------------------------------------------------------------
CREATE TABLE app_settings (
    id BIGSERIAL PRIMARY KEY,
    key VARCHAR(100) UNIQUE NOT NULL,
    value JSONB NOT NULL,
    description TEXT,

    updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

-- Duplicates the UNIQUE(key) index; kept for fidelity with the seed.
CREATE INDEX idx_app_settings_key ON app_settings (key);

-- departs from seed: addition, keeps updated_at current (see touch_updated_at).
CREATE TRIGGER trg_app_settings_touch_updated_at
BEFORE UPDATE ON app_settings
FOR EACH ROW
EXECUTE FUNCTION touch_updated_at();

-- Seed common settings
INSERT INTO app_settings (key, value, description) VALUES
('commission_rate', '{"default": 15, "premium": 10}', 'Platform commission rates'),
('booking_timeout', '{"pending": 300, "accepted": 1800}', 'Booking timeout in seconds'),
('cancellation_policy', '{"free_before_hours": 24, "fee_percentage": 50}', 'Cancellation policy'),
('service_radius_max', '20', 'Maximum service radius in km');

-- departs from seed: additions, settings of the provider location pipeline.
INSERT INTO app_settings (key, value, description) VALUES
('location_retention_months', '3', 'Months of provider_locations partitions kept before dropping'),
('location_store_interval_s', '15', 'Store a provider location fix at most every N seconds'),
('location_store_distance_m', '50', 'Store a provider location fix earlier once the provider moved N metres');

-- ---------------------------------------------------------------------------
-- audit_logs
-- ---------------------------------------------------------------------------
CREATE TABLE audit_logs (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT REFERENCES users(id),

    action VARCHAR(100) NOT NULL,
    auditable_type VARCHAR(255) NOT NULL,
    auditable_id BIGINT NOT NULL,

    old_values JSONB,
    new_values JSONB,

    ip_address INET,
    user_agent TEXT,

    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_audit_logs_user ON audit_logs (user_id);
CREATE INDEX idx_audit_logs_auditable ON audit_logs (auditable_type, auditable_id);
CREATE INDEX idx_audit_logs_created ON audit_logs (created_at);
