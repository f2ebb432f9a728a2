-- Hilot schema, part 4: provider_locations (seed section 3.2), the real-time
-- location log of providers, RANGE-partitioned by month on created_at.
--
-- Partitions:
--   * provider_locations_yYYYYmMM  one per calendar month, e.g.
--     provider_locations_y2026m11 holds [2026-11-01 00:00Z, 2026-12-01 00:00Z).
--     Month boundaries are midnight UTC, independent of the session TimeZone.
--   * provider_locations_default   DEFAULT partition, a safety net for rows
--     outside every monthly partition (e.g. a clock years ahead), so an
--     insert never fails for lack of a partition.
-- Partitions are created with ensure_provider_locations_partition(date),
-- which the server calls ahead of time (daily, for this month and the next
-- ones); the server drops months older than the app_settings key
-- location_retention_months (the seed's section 8.2 "drop old partitions
-- after 3 months").

CREATE TABLE provider_locations (
    id BIGSERIAL,
    provider_id BIGINT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    latitude NUMERIC(10, 8) NOT NULL,
    longitude NUMERIC(11, 8) NOT NULL,
    location GEOGRAPHY(POINT, 4326), -- PostGIS, maintained by trigger below
    accuracy NUMERIC(6, 2), -- meters
    heading NUMERIC(5, 2), -- degrees
    speed NUMERIC(6, 2), -- km/h

    -- Status
    is_moving BOOLEAN DEFAULT FALSE,
    battery_level INTEGER, -- percentage

    -- departs from seed: NOT NULL (was nullable) because it is the partition
    -- key and part of the primary key; rows need a month to land in.
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    -- departs from seed: PRIMARY KEY (id, created_at) instead of id alone; a
    -- partitioned table's primary key must include the partition key (the
    -- seed's `id BIGSERIAL PRIMARY KEY` is rejected by PostgreSQL). id stays
    -- unique in practice since it comes from one sequence.
    PRIMARY KEY (id, created_at)
-- departs from seed: the seed creates a monthly partition but never declares
-- the table partitioned; PARTITION BY RANGE (created_at) makes that valid.
) PARTITION BY RANGE (created_at);

-- Indexes on the partitioned parent propagate to every partition, present
-- and future.
CREATE INDEX idx_provider_locations_provider ON provider_locations (provider_id);
-- Also listed in section 4.2 under the same name and definition: created once.
CREATE INDEX idx_provider_locations_location ON provider_locations USING GIST (location);
CREATE INDEX idx_provider_locations_created ON provider_locations (created_at);
-- departs from seed: addition. "Latest fix of a provider" is
--   WHERE provider_id = $1 [AND created_at > now() - interval '...']
--   ORDER BY created_at DESC LIMIT 1
-- which this index answers with one index probe per (pruned) partition, in
-- order (Merge Append), instead of reading all of the provider's fixes and
-- sorting them. Bounding created_at lets PostgreSQL skip (prune) the
-- partitions of earlier months entirely.
CREATE INDEX idx_provider_locations_provider_created ON provider_locations (provider_id, created_at DESC);

-- Trigger for location. BEFORE INSERT row triggers on a partitioned table are
-- allowed since PostgreSQL 13; the trigger is cloned onto every partition.
CREATE OR REPLACE FUNCTION update_provider_location()
RETURNS TRIGGER AS $$
BEGIN
    NEW.location = ST_SetSRID(ST_MakePoint(NEW.longitude, NEW.latitude), 4326)::geography;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trg_update_provider_location
BEFORE INSERT ON provider_locations
FOR EACH ROW
EXECUTE FUNCTION update_provider_location();

-- departs from seed: addition. Safety net: rows outside every monthly
-- partition land here instead of failing the insert.
CREATE TABLE provider_locations_default PARTITION OF provider_locations DEFAULT;

-- ---------------------------------------------------------------------------
-- ensure_provider_locations_partition(month_start date) -> partition name
-- ---------------------------------------------------------------------------
-- departs from seed: addition, replaces the seed's hand-written partition DDL
-- (sections 3.2 and 8.2).
-- Creates provider_locations_yYYYYmMM for the (UTC) month containing
-- month_start if it does not exist yet, and returns its name. Idempotent:
-- calling it again for any day of that month just returns the name.
--
-- If the DEFAULT partition already holds rows of that month (they arrived
-- before the monthly partition existed), a plain CREATE ... PARTITION OF
-- would fail ("updated partition constraint for default partition would be
-- violated"). The function therefore moves them:
--   1. lock provider_locations (ACCESS EXCLUSIVE, held to end of transaction),
--   2. DETACH the default partition,
--   3. CREATE the monthly partition,
--   4. copy that month's rows from the default into it, delete them there,
--   5. ATTACH the default partition back (PostgreSQL re-validates it).
-- All of this runs in the caller's transaction, so it is atomic; readers and
-- writers of provider_locations wait for the lock meanwhile, which is why the
-- server should create partitions ahead of time so this path stays rare.
-- Concurrent callers are serialised by the same lock, and the existence
-- check is repeated once the lock is held.
CREATE OR REPLACE FUNCTION ensure_provider_locations_partition(month_start date)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_parent   regclass := 'provider_locations'::regclass;
    v_schema   text;
    v_start    date;
    v_from     timestamptz;
    v_to       timestamptz;
    v_name     text;
    v_default  oid;
    v_has_rows boolean := false;
    v_cols     text;
    v_moved    bigint;
BEGIN
    IF month_start IS NULL THEN
        RAISE EXCEPTION 'ensure_provider_locations_partition: month_start must not be NULL';
    END IF;

    v_start := date_trunc('month', month_start)::date;
    -- Bounds are midnight UTC; as timestamptz values they do not depend on
    -- the session TimeZone.
    v_from  := v_start::timestamp AT TIME ZONE 'UTC';
    v_to    := (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    v_name  := 'provider_locations_' || to_char(v_start, '"y"YYYY"m"MM');

    SELECT n.nspname INTO v_schema
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = v_parent;

    -- Fast path, no lock: the partition already exists.
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = v_parent AND c.relname = v_name) THEN
        RETURN v_name;
    END IF;

    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_parent);

    -- Re-check under the lock (a concurrent caller may have won the race).
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = v_parent AND c.relname = v_name) THEN
        RETURN v_name;
    END IF;
    IF to_regclass(format('%I.%I', v_schema, v_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'ensure_provider_locations_partition: table %.% exists but is not a partition of provider_locations',
            v_schema, v_name;
    END IF;

    SELECT NULLIF(partdefid, 0) INTO v_default
    FROM pg_partitioned_table WHERE partrelid = v_parent;

    IF v_default IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE created_at >= $1 AND created_at < $2)',
                       v_default::regclass)
            INTO v_has_rows USING v_from, v_to;
    END IF;

    IF NOT v_has_rows THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       v_schema, v_name, v_parent, v_from, v_to);
        RETURN v_name;
    END IF;

    -- Move path: the default partition holds rows of this month.
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO v_cols
    FROM pg_attribute
    WHERE attrelid = v_parent AND attnum > 0 AND NOT attisdropped;

    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', v_parent, v_default::regclass);
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   v_schema, v_name, v_parent, v_from, v_to);
    EXECUTE format('INSERT INTO %I.%I (%s) SELECT %s FROM %s WHERE created_at >= $1 AND created_at < $2',
                   v_schema, v_name, v_cols, v_cols, v_default::regclass)
        USING v_from, v_to;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    EXECUTE format('DELETE FROM %s WHERE created_at >= $1 AND created_at < $2', v_default::regclass)
        USING v_from, v_to;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s DEFAULT', v_parent, v_default::regclass);

    RAISE NOTICE 'ensure_provider_locations_partition: created %, moved % row(s) out of %',
        v_name, v_moved, v_default::regclass;
    RETURN v_name;
END;
$$;

-- departs from seed: the seed hard-codes provider_locations_y2026m02, which
-- is already in the past; instead create the partitions for the current UTC
-- month and the next two, relative to now() at migration time.
SELECT ensure_provider_locations_partition(
           (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m))::date)
FROM generate_series(0, 2) AS m;
