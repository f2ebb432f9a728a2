-- The ledger's invariants. Every row returned is a violation (none on a healthy ledger):
--   wallet_balance       a wallet's balance differs from the sum of its lines
--   wallet_chain         a line does not start where the wallet's previous line ended
--   booking_split        a completed booking's total is not earnings + commission + fee - promo
--   booking_payment      a completed booking's completed payments are not its total
--   booking_earnings     a completed booking's earnings lines are not its provider_earnings
--   booking_platform     the platform's lines of a completed booking are not
--                        commission + platform fee - promo discount
--   cancellation_money   a cancelled booking kept (payments - refunds) other than its fee, or
--                        the fee was not split between therapist and platform
--   tips                 a booking's tips (transactions, therapist lines) differ from tip_amount
--   payout_lines         a live payout's net differs from the lines it paid, or from its debit
--   duplicate_payment    a booking's second payment (status 'refunded') is not refunded in full
--
-- A payment set aside as a duplicate and its refund count in neither a booking's payments nor
-- its refunds.
WITH lines AS (
    SELECT l.*, CASE WHEN l.type = 'credit' THEN l.amount ELSE -l.amount END AS signed,
           lag(l.balance_after) OVER (PARTITION BY l.wallet_id ORDER BY l.id) AS previous_after
    FROM wallet_transactions l
),
completed AS (
    SELECT b.* FROM bookings b WHERE b.status = 'completed'
),
cancelled AS (
    SELECT b.* FROM bookings b WHERE b.status IN ('cancelled', 'no_show')
),
payments AS (
    SELECT t.booking_id,
           SUM(t.amount) FILTER (WHERE t.type = 'payment' AND t.status = 'completed') AS paid,
           SUM(t.amount) FILTER (WHERE t.type = 'refund' AND t.status <> 'failed'
                                   AND r.status IS DISTINCT FROM 'refunded') AS refunded,
           SUM(t.amount) FILTER (WHERE t.type = 'tip' AND t.status = 'completed') AS tips
    FROM transactions t LEFT JOIN transactions r ON r.id = t.related_transaction_id
    WHERE t.booking_id IS NOT NULL GROUP BY t.booking_id
),
booking_lines AS (
    SELECT booking_id,
           SUM(signed) FILTER (WHERE entry_kind = 'earnings') AS earnings,
           SUM(signed) FILTER (WHERE entry_kind = 'tip_received') AS tips,
           SUM(signed) FILTER (WHERE entry_kind = 'cancellation_compensation') AS compensation
    FROM lines WHERE booking_id IS NOT NULL GROUP BY booking_id
),
platform AS (
    SELECT booking_id, SUM(amount) AS amount,
           SUM(amount) FILTER (WHERE kind = 'cancellation_commission') AS cancellation
    FROM platform_ledger GROUP BY booking_id
)
SELECT 'wallet_balance' AS check_name, 'wallet ' || w.id AS subject,
       COALESCE(w.balance, 0)::text AS actual, COALESCE(SUM(l.signed), 0)::text AS expected
FROM wallets w LEFT JOIN lines l ON l.wallet_id = w.id
GROUP BY w.id, w.balance HAVING COALESCE(w.balance, 0) <> COALESCE(SUM(l.signed), 0)
UNION ALL
SELECT 'wallet_chain', 'wallet line ' || l.id, l.balance_before::text, COALESCE(l.previous_after, 0)::text
FROM lines l WHERE l.balance_before <> COALESCE(l.previous_after, 0)
UNION ALL
SELECT 'booking_split', b.booking_number, b.total_amount::text,
       (b.provider_earnings + b.commission_amount + COALESCE(b.platform_fee, 0) - COALESCE(b.promo_discount, 0))::text
FROM completed b
WHERE b.total_amount <> b.provider_earnings + b.commission_amount + COALESCE(b.platform_fee, 0) - COALESCE(b.promo_discount, 0)
UNION ALL
-- Completed payments only: a completed booking whose gateway payment is still pending was served
-- unpaid, and must show here.
SELECT 'booking_payment', b.booking_number, COALESCE(p.paid, 0)::text, b.total_amount::text
FROM completed b LEFT JOIN payments p ON p.booking_id = b.id
WHERE COALESCE(p.paid, 0) <> b.total_amount
UNION ALL
SELECT 'booking_earnings', b.booking_number, COALESCE(bl.earnings, 0)::text, b.provider_earnings::text
FROM completed b LEFT JOIN booking_lines bl ON bl.booking_id = b.id
WHERE COALESCE(bl.earnings, 0) <> b.provider_earnings
UNION ALL
SELECT 'booking_platform', b.booking_number, COALESCE(pl.amount, 0)::text,
       (b.commission_amount + COALESCE(b.platform_fee, 0) - COALESCE(b.promo_discount, 0))::text
FROM completed b LEFT JOIN platform pl ON pl.booking_id = b.id
WHERE COALESCE(pl.amount, 0) <> b.commission_amount + COALESCE(b.platform_fee, 0) - COALESCE(b.promo_discount, 0)
UNION ALL
SELECT 'cancellation_money', b.booking_number,
       (COALESCE(p.paid, 0) - COALESCE(p.refunded, 0))::text || ' kept, '
           || (COALESCE(bl.compensation, 0) + COALESCE(pl.cancellation, 0))::text || ' split',
       COALESCE(b.cancellation_fee, 0)::text
FROM cancelled b LEFT JOIN payments p ON p.booking_id = b.id
LEFT JOIN booking_lines bl ON bl.booking_id = b.id LEFT JOIN platform pl ON pl.booking_id = b.id
WHERE COALESCE(p.paid, 0) - COALESCE(p.refunded, 0) <> COALESCE(b.cancellation_fee, 0)
   OR COALESCE(bl.compensation, 0) + COALESCE(pl.cancellation, 0) <> COALESCE(b.cancellation_fee, 0)
UNION ALL
SELECT 'tips', b.booking_number,
       COALESCE(p.tips, 0)::text || ' paid, ' || COALESCE(bl.tips, 0)::text || ' credited',
       COALESCE(b.tip_amount, 0)::text
FROM bookings b LEFT JOIN payments p ON p.booking_id = b.id LEFT JOIN booking_lines bl ON bl.booking_id = b.id
WHERE COALESCE(p.tips, 0) <> COALESCE(b.tip_amount, 0) OR COALESCE(bl.tips, 0) <> COALESCE(b.tip_amount, 0)
UNION ALL
SELECT 'payout_lines', 'payout ' || po.id, po.net_payout::text,
       COALESCE(SUM(l.signed) FILTER (WHERE l.entry_kind <> 'payout'), 0)::text || ' paid lines, '
           || COALESCE(SUM(l.amount) FILTER (WHERE l.entry_kind = 'payout'), 0)::text || ' debited'
FROM payouts po LEFT JOIN lines l ON l.payout_id = po.id
WHERE po.status <> 'failed'
GROUP BY po.id, po.net_payout
HAVING po.net_payout <> COALESCE(SUM(l.signed) FILTER (WHERE l.entry_kind <> 'payout'), 0)
    OR po.net_payout <> COALESCE(SUM(l.amount) FILTER (WHERE l.entry_kind = 'payout'), 0)
UNION ALL
SELECT 'duplicate_payment', 'transaction ' || d.id,
       COALESCE(SUM(r.amount) FILTER (WHERE r.status <> 'failed'), 0)::text || ' refunded', d.amount::text
FROM transactions d LEFT JOIN transactions r ON r.related_transaction_id = d.id AND r.type = 'refund'
WHERE d.type = 'payment' AND d.status = 'refunded'
GROUP BY d.id, d.amount
HAVING COALESCE(SUM(r.amount) FILTER (WHERE r.status <> 'failed'), 0) <> d.amount
