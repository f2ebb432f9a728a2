-- departs from seed: a booking for now is offered to whichever therapist the matcher finds, and
-- accepting prices it on that therapist's own terms. Without a ceiling a therapist who set an
-- absurd price (up to 100,000) turned an 800 estimate into a 100,000 charge, and a cancellation
-- fee of half of it. `max_service_amount` is the most the customer accepts for the service and
-- travel surcharge (fees and promos aside): the matcher offers the booking only to therapists
-- whose price for it stays within, and accepting re-checks it. NULL: no ceiling (a request to a
-- named therapist, whose quote the customer chose, and bookings made before this column).
ALTER TABLE bookings ADD COLUMN max_service_amount NUMERIC(10, 2)
    CHECK (max_service_amount IS NULL OR max_service_amount > 0);
