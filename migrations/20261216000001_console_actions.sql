-- Hilot schema: what the dispatch console's actions write.

-- departs from seed: addition. A dispatcher writes to a booking's parties through the same
-- chat; such a message is neither side's, and reaches only its receiver (one row per party
-- written to).
ALTER TABLE messages ADD COLUMN from_dispatcher BOOLEAN NOT NULL DEFAULT false;
