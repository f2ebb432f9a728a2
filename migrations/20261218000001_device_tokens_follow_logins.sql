-- Hilot schema: a push device belongs to the login that registered it.
--
-- departs from seed: addition. device_tokens.access_token_id is the personal access token the
-- app was signed in with when it registered the device. Logging out (or an admin revoking the
-- user's tokens, or deactivating the account) deletes the token and, with it, the device: a
-- phone signed out no longer receives that user's pushes. Devices registered before this
-- column existed keep NULL and stay until retired.
ALTER TABLE device_tokens
    ADD COLUMN access_token_id BIGINT REFERENCES personal_access_tokens(id) ON DELETE CASCADE;
CREATE INDEX idx_device_tokens_access_token ON device_tokens (access_token_id);
