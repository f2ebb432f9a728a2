-- One row per partition of provider_locations (monthly partitions and the
-- DEFAULT one), oldest first, DEFAULT last.
--   name        text         partition table name, e.g. provider_locations_y2026m11
--   range_from  timestamptz  inclusive lower bound (NULL for the DEFAULT partition)
--   range_to    timestamptz  exclusive upper bound (NULL for the DEFAULT partition)
--   is_default  bool
--   row_count   int8         exact count(*) of the partition (scans it)
--   row_estimate int8        planner estimate (pg_class.reltuples), NULL if never analyzed
-- The bounds are parsed from pg_get_expr(relpartbound), which prints the
-- timestamptz bounds with their UTC offset, so the casts are exact.
-- The exact count uses the query_to_xml trick to run one count(*) per
-- partition in plain SQL (no function needed).
SELECT
    c.relname::text AS name,
    CASE WHEN b.is_default THEN NULL
         ELSE substring(b.bound FROM $re$FROM \('([^']*)'\)$re$)::timestamptz
    END AS range_from,
    CASE WHEN b.is_default THEN NULL
         ELSE substring(b.bound FROM $re$TO \('([^']*)'\)$re$)::timestamptz
    END AS range_to,
    b.is_default,
    (xpath('/row/n/text()',
           query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                        false, true, '')))[1]::text::int8 AS row_count,
    CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::int8 END AS row_estimate
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT pg_get_expr(c.relpartbound, c.oid) AS bound,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS is_default
) b
WHERE i.inhparent = 'provider_locations'::regclass
ORDER BY b.is_default, range_from;
