-- A cancelled booking gives its promo code back.
WITH released AS (
    DELETE FROM promo_code_usages WHERE booking_id = $1 RETURNING promo_code_id
)
UPDATE promo_codes
SET usage_count = GREATEST(COALESCE(usage_count, 0) - 1, 0)
WHERE id IN (SELECT promo_code_id FROM released)
