-- Redeems a WebSocket ticket: deletes it (single use) and answers the owner of the token that
-- made it, when the ticket is unexpired and the token and its user are still valid.
-- $1: the ticket's SHA-256 hex digest; $2: the users' model type.
WITH redeemed AS (
    DELETE FROM ws_tickets WHERE digest = $1 RETURNING token_id, expires_at
)
SELECT t.id, t.tokenable_id, u.uuid,
       COALESCE((SELECT array_agg(r.name) FROM model_has_roles mr JOIN roles r ON r.id = mr.role_id
                 WHERE mr.model_id = u.id AND mr.model_type = $2), '{}'),
       t.last_used_at, t.expires_at
FROM redeemed
JOIN personal_access_tokens t ON t.id = redeemed.token_id
JOIN users u ON u.id = t.tokenable_id
WHERE redeemed.expires_at > now()
  AND t.tokenable_type = $2
  AND (t.expires_at IS NULL OR t.expires_at > now())
  AND u.is_active IS NOT FALSE AND u.deleted_at IS NULL
