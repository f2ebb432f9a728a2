-- Hilot schema: the outbox's due rows indexed per channel.
--
-- The worker claims one channel at a time from the head of its queue. With one index over
-- every channel's due rows, a claim for pushes or webhooks walked past every due booking event
-- (thousands under load: 55 ms a claim, a quarter of the database's time at 100 bookings/s),
-- and the dead-letter gauge counted the whole table, delivered rows included.
CREATE INDEX idx_outbox_channel_due ON outbox (channel, next_attempt_at, id) WHERE status = 'pending';
DROP INDEX idx_outbox_due;
CREATE INDEX idx_outbox_dead ON outbox (channel) WHERE status = 'dead';
