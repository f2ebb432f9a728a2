-- Hilot schema, part 10: seed data (seed section 7).
-- (The app_settings rows of section 3.8 are inserted with their table.)

-- 7.1 Initial roles
INSERT INTO roles (name, guard_name) VALUES
('customer', 'api'),
('therapist', 'api'),
('store_owner', 'api'),
('admin', 'api'),
('super_admin', 'api');

-- 7.2 Service categories
INSERT INTO service_categories (name, slug, description, sort_order) VALUES
('Massage Therapy', 'massage-therapy', 'Professional therapeutic massage services', 1),
('Spa Treatments', 'spa-treatments', 'Relaxation and beauty treatments', 2),
('Physical Therapy', 'physical-therapy', 'Rehabilitation and recovery services', 3);

-- 7.3 Services
-- departs from seed: the seed hard-codes category_id 1 / 2; the category is
-- looked up by slug instead, so the rows stay correct whatever ids the
-- service_categories sequence handed out.
INSERT INTO services (category_id, name, slug, base_price, duration_minutes, description)
SELECT c.id, v.name, v.slug, v.base_price, v.duration_minutes, v.description
FROM (VALUES
    ('massage-therapy', 'Swedish Massage', 'swedish-massage', 800.00, 60, 'Gentle, relaxing full-body massage', 1),
    ('massage-therapy', 'Deep Tissue Massage', 'deep-tissue-massage', 1000.00, 60, 'Intense pressure for muscle tension relief', 2),
    ('massage-therapy', 'Sports Massage', 'sports-massage', 1200.00, 60, 'For athletes and active individuals', 3),
    ('massage-therapy', 'Aromatherapy Massage', 'aromatherapy-massage', 1100.00, 90, 'Massage with essential oils', 4),
    ('massage-therapy', 'Hot Stone Massage', 'hot-stone-massage', 1500.00, 90, 'Therapeutic massage with heated stones', 5),
    ('spa-treatments', 'Foot Spa', 'foot-spa', 500.00, 30, 'Relaxing foot massage and treatment', 6),
    ('spa-treatments', 'Body Scrub', 'body-scrub', 800.00, 45, 'Exfoliation treatment', 7)
) AS v(category_slug, name, slug, base_price, duration_minutes, description, seed_order)
JOIN service_categories c ON c.slug = v.category_slug
ORDER BY v.seed_order; -- same id order as the seed's INSERT
