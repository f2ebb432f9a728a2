-- Hilot schema, part 12: exactly-once storage of location pings.

-- departs from seed: the app numbers its pings (`seq`); storing the number lets a ping resent
-- after a reconnect or a server restart be recognised and stored only once.
ALTER TABLE provider_locations ADD COLUMN client_seq BIGINT;

-- departs from seed: the unique key includes created_at because every unique index of a
-- partitioned table must include the partition key; a resent ping carries the same fix time.
CREATE UNIQUE INDEX uq_provider_locations_client_seq
    ON provider_locations (provider_id, client_seq, created_at);
