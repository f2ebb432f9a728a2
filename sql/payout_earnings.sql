-- Seed §6.2 ("Calculate Provider Earnings for Payout") over what has not been paid out yet:
-- per therapist, the earning lines of their wallet (earnings, tips, cancellation compensation,
-- less cash they collected for the platform) of bookings completed, or cancelled with a fee,
-- between $1 and $2 (dates, both included). Each line is paid out once (payout_id), so running
-- the same period again finds nothing, and a tip given after a payout is paid by the next run.
--   gross_earnings   = service price + distance surcharge of each completed booking, + tips
--                      + cancellation compensation
--   total_commission = the platform's commission of those bookings
--   net_earnings     = provider earnings + tips + compensation - cash collected
SELECT p.id AS provider_id,
       w.user_id,
       COUNT(DISTINCT l.booking_id) FILTER (WHERE l.entry_kind = 'earnings')::INT AS total_bookings,
       COALESCE(SUM(CASE l.entry_kind
                    WHEN 'earnings' THEN b.service_price + COALESCE(b.distance_surcharge, 0)
                    WHEN 'tip_received' THEN l.amount
                    WHEN 'cancellation_compensation' THEN l.amount
                    ELSE 0 END), 0) AS gross_earnings,
       COALESCE(SUM(CASE WHEN l.entry_kind = 'earnings' THEN b.commission_amount ELSE 0 END), 0)
           AS total_commission,
       COALESCE(SUM(CASE WHEN l.type = 'credit' THEN l.amount ELSE -l.amount END), 0) AS net_earnings,
       ARRAY_AGG(l.id) AS line_ids,
       COALESCE(w.balance, 0) AS balance
FROM wallet_transactions l
JOIN wallets w ON w.id = l.wallet_id
JOIN bookings b ON b.id = l.booking_id
JOIN providers p ON p.id = b.provider_id AND p.user_id = w.user_id
WHERE l.payout_id IS NULL
  AND l.entry_kind IN ('earnings', 'tip_received', 'cash_collected', 'cancellation_compensation')
  AND COALESCE(b.completed_at, b.cancelled_at) >= $1::date
  AND COALESCE(b.completed_at, b.cancelled_at) < ($2::date + 1)
GROUP BY p.id, w.user_id, w.balance
ORDER BY p.id
