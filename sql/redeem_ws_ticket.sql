-- Redeems a WebSocket ticket for a socket that only some roles may open: the owner of the token
-- that made it, when the ticket is unexpired and the token and its user are still valid, and
-- whether it was used up. It is used up (deleted: single use) only when the owner holds one of
-- the roles $3, so a ticket presented at the wrong socket is refused and still works at the
-- right one. Of two concurrent redemptions one deletes it; the other answers `redeemed` false.
-- $1: the ticket's SHA-256 hex digest; $2: the users' model type; $3: the roles allowed.
WITH owner AS (
    SELECT t.id, t.tokenable_id, u.uuid,
           COALESCE((SELECT array_agg(r.name::text) FROM model_has_roles mr
                     JOIN roles r ON r.id = mr.role_id
                     WHERE mr.model_id = u.id AND mr.model_type = $2), '{}') AS roles,
           t.expires_at
    FROM ws_tickets w
    JOIN personal_access_tokens t ON t.id = w.token_id
    JOIN users u ON u.id = t.tokenable_id
    WHERE w.digest = $1
      AND w.expires_at > now()
      AND t.tokenable_type = $2
      AND (t.expires_at IS NULL OR t.expires_at > now())
      AND u.is_active IS NOT FALSE AND u.deleted_at IS NULL
), redeemed AS (
    DELETE FROM ws_tickets
    WHERE digest = $1 AND EXISTS (SELECT 1 FROM owner WHERE owner.roles && $3::text[])
    RETURNING digest
)
SELECT owner.id, owner.tokenable_id, owner.uuid, owner.roles, owner.expires_at,
       EXISTS (SELECT 1 FROM redeemed) AS redeemed
FROM owner
