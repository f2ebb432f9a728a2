//! Seeding a simulated city straight into the database: verified therapists with services,
//! customers, and (for the demo) wellness centres in Makati, each with a fresh login token.
//!
//! Seeding is the operator's job (like `hilot admin create`), so it writes SQL directly: going
//! through `POST /v1/auth/register` would spend an Argon2id hash per account (minutes for the
//! 15,000 therapists of a load test). Everything the simulated people do afterwards goes
//! through the public API. Accounts live in a phone-number block per use, so the demo, a load
//! test and a benchmark never drive the same therapist, and seeding again reuses the accounts.

use anyhow::Context as _;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

use crate::accounts::{password, tokens, Role, USER_MODEL_TYPE};
use crate::geo::Point;
use crate::schedule::weekly::{self, DayRange, WeeklySchedule};

/// The password of every simulated account, so a person can log in as one from an app.
pub const SIMULATED_PASSWORD: &str = "hilot-demo-password";
/// `personal_access_tokens.name` of simulator tokens; seeding again replaces them.
pub const TOKEN_NAME: &str = "hilot-simulator";
/// Simulator tokens outlive any demo or test run, and no more.
const TOKEN_TTL: chrono::Duration = chrono::Duration::days(2);

/// A rectangle of the city: south, west, north, east.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub south: f64,
    pub west: f64,
    pub north: f64,
    pub east: f64,
}

impl Area {
    pub fn random_point(&self, rng: &mut impl Rng) -> Point {
        Point::new(
            rng.gen_range(self.south..self.north),
            rng.gen_range(self.west..self.east),
        )
    }

    pub fn center(&self) -> Point {
        Point::new(
            (self.south + self.north) / 2.0,
            (self.west + self.east) / 2.0,
        )
    }

    /// `[west, south, east, north]`, the dashboard's viewport order.
    pub fn bbox(&self) -> [f64; 4] {
        [self.west, self.south, self.east, self.north]
    }
}

/// Makati and its edges: Ayala, Salcedo and Legazpi villages, Poblacion, Bel-Air, Guadalupe.
pub const MAKATI: Area = Area {
    south: 14.535,
    west: 121.005,
    north: 14.575,
    east: 121.055,
};

/// Metro Manila, roughly: Valenzuela to Muntinlupa, Manila Bay to Marikina.
pub const METRO_MANILA: Area = Area {
    south: 14.35,
    west: 120.95,
    north: 14.78,
    east: 121.13,
};

/// Which block of phone numbers a population uses (`+639{block}NNNNNNNN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneBlock {
    Demo = 1,
    LoadTest = 2,
    Benchmark = 3,
}

/// What to seed.
#[derive(Debug, Clone)]
pub struct CitySpec {
    pub block: PhoneBlock,
    pub therapists: usize,
    pub customers: usize,
    pub area: Area,
    /// Km each therapist will travel (service radius and every service's max travel).
    pub travel_km: i32,
    /// Every therapist offers every active service (identical data for benchmarks) rather
    /// than a random handful.
    pub all_services: bool,
    /// Store the therapists online with a fix at their base now, as if they had just pinged
    /// (benchmarks, which cannot hold 100,000 sockets open).
    pub online_with_fix: bool,
    /// Seed of the random city: the same seed gives the same bases.
    pub rng_seed: u64,
    /// Share of therapists (0–1) who keep a weekly schedule (every day, all day, Manila time),
    /// so they are offered scheduled bookings as well as book-now work.
    pub with_schedule: f64,
}

/// Admins seeded for simulated dashboards (each dashboard uses its own).
pub const DASHBOARD_ADMINS: usize = 64;

/// A seeded account and its login token.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub phone: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct SimTherapist {
    pub account: SimAccount,
    pub provider_id: Uuid,
    pub base: Point,
    /// Public ids of the services this therapist offers.
    pub service_ids: Vec<Uuid>,
}

#[derive(Debug, Clone)]
pub struct SeededCity {
    pub therapists: Vec<SimTherapist>,
    pub customers: Vec<SimAccount>,
    /// An admin, for people watching the map (the demo prints its login).
    pub admin: SimAccount,
    /// Admins for simulated dashboards, one each: a server keeps at most a few sockets per user
    /// and kind (`HILOT_SOCKETS_PER_USER`).
    pub dashboard_admins: Vec<SimAccount>,
    /// Public ids of the active services.
    pub service_ids: Vec<Uuid>,
}

const FIRST_NAMES: &[&str] = &[
    "Maria", "Jose", "Ana", "Juan", "Rosa", "Mark", "Grace", "Paolo", "Kristine", "Miguel",
    "Andrea", "Rafael", "Camille", "Joshua", "Bea", "Carlo", "Patricia", "Gabriel", "Nicole",
    "Angelo", "Liza", "Ramon", "Joy", "Enrico", "Trisha", "Dennis", "Mae", "Noel", "Aileen", "Jun",
];
const LAST_NAMES: &[&str] = &[
    "Santos",
    "Reyes",
    "Cruz",
    "Bautista",
    "Ocampo",
    "Garcia",
    "Mendoza",
    "Torres",
    "Tomas",
    "Andrada",
    "Castillo",
    "Flores",
    "Villanueva",
    "Ramos",
    "Aquino",
    "Navarro",
    "Dela Cruz",
    "Gonzales",
    "Lopez",
    "Salazar",
    "Soriano",
    "Domingo",
    "Pascual",
    "Mercado",
];

fn phone(block: PhoneBlock, kind: u32, index: usize) -> String {
    // +63 9 <block> <kind> <7 digits>: 10 national digits, like a Philippine mobile number.
    format!("+639{}{}{:07}", block as u32, kind, index)
}

struct People {
    phones: Vec<String>,
    first_names: Vec<String>,
    last_names: Vec<String>,
}

fn people(block: PhoneBlock, kind: u32, count: usize, rng: &mut impl Rng) -> People {
    let mut out = People {
        phones: Vec::with_capacity(count),
        first_names: Vec::with_capacity(count),
        last_names: Vec::with_capacity(count),
    };
    for i in 0..count {
        out.phones.push(phone(block, kind, i));
        out.first_names
            .push((*FIRST_NAMES.choose(rng).expect("names")).to_owned());
        out.last_names
            .push((*LAST_NAMES.choose(rng).expect("names")).to_owned());
    }
    out
}

/// Inserts (or finds) the users with their role and gives each a fresh token, in input order.
async fn upsert_users(
    tx: &mut sqlx::PgConnection,
    people: &People,
    password_hash: &str,
    role: Role,
) -> anyhow::Result<(Vec<i64>, Vec<String>)> {
    sqlx::query(
        "INSERT INTO users (phone, password, first_name, last_name, is_verified, phone_verified_at) \
         SELECT phone, $4, first_name, last_name, TRUE, now() \
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(phone, first_name, last_name) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&people.phones)
    .bind(&people.first_names)
    .bind(&people.last_names)
    .bind(password_hash)
    .execute(&mut *tx)
    .await
    .context("inserting simulated users")?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT u.id FROM UNNEST($1::text[]) WITH ORDINALITY AS t(phone, n) \
         JOIN users u ON u.phone = t.phone ORDER BY t.n",
    )
    .bind(&people.phones)
    .fetch_all(&mut *tx)
    .await
    .context("reading simulated user ids")?;
    anyhow::ensure!(
        ids.len() == people.phones.len(),
        "some simulated phone numbers belong to deleted accounts"
    );
    sqlx::query(
        "INSERT INTO model_has_roles (role_id, model_type, model_id) \
         SELECT r.id, $3, u FROM roles r, UNNEST($2::bigint[]) AS u WHERE r.name = $1 \
         ON CONFLICT DO NOTHING",
    )
    .bind(role.as_str())
    .bind(&ids)
    .bind(USER_MODEL_TYPE)
    .execute(&mut *tx)
    .await
    .context("granting simulated roles")?;
    sqlx::query(
        "DELETE FROM personal_access_tokens WHERE tokenable_type = $1 AND name = $2 \
         AND tokenable_id = ANY($3)",
    )
    .bind(USER_MODEL_TYPE)
    .bind(TOKEN_NAME)
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .context("dropping old simulator tokens")?;
    let secrets: Vec<String> = ids.iter().map(|_| tokens::generate_secret()).collect();
    let digests: Vec<String> = secrets.iter().map(|s| tokens::digest(s)).collect();
    sqlx::query(
        "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token, abilities, expires_at) \
         SELECT $1, id, $2, token, $3, now() + $4 FROM UNNEST($5::bigint[], $6::text[]) AS t(id, token)",
    )
    .bind(USER_MODEL_TYPE)
    .bind(TOKEN_NAME)
    .bind(tokens::FULL_ABILITIES)
    .bind(TOKEN_TTL)
    .bind(&ids)
    .bind(&digests)
    .execute(&mut *tx)
    .await
    .context("issuing simulator tokens")?;
    Ok((ids, secrets))
}

/// Seeds the city and returns every account with a token. Idempotent per phone block.
pub async fn seed_city(pool: &PgPool, spec: &CitySpec) -> anyhow::Result<SeededCity> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.rng_seed);
    let password_hash = password::hash_password(SIMULATED_PASSWORD)?;
    let mut tx = pool.begin().await.context("starting the seed")?;

    let services: Vec<(i64, rust_decimal::Decimal, Uuid)> = sqlx::query_as(
        "SELECT id, base_price, uuid FROM services WHERE COALESCE(is_active, TRUE) AND deleted_at IS NULL ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await
    .context("reading the catalog")?;
    anyhow::ensure!(!services.is_empty(), "the service catalog is empty");

    // Therapists: users, providers (verified), profiles at their base, and service terms.
    let therapist_people = people(spec.block, 1, spec.therapists, &mut rng);
    let (user_ids, secrets) =
        upsert_users(&mut tx, &therapist_people, &password_hash, Role::Therapist).await?;
    let bases: Vec<Point> = (0..spec.therapists)
        .map(|_| spec.area.random_point(&mut rng))
        .collect();
    let lats: Vec<f64> = bases.iter().map(|p| p.lat).collect();
    let lngs: Vec<f64> = bases.iter().map(|p| p.lng).collect();
    sqlx::query(
        "INSERT INTO providers (user_id, type, verification_status, verified_at, accepts_home_service, is_available) \
         SELECT u, 'therapist', 'verified', now(), TRUE, $2 FROM UNNEST($1::bigint[]) AS u \
         ON CONFLICT DO NOTHING",
    )
    .bind(&user_ids)
    .bind(spec.online_with_fix)
    .execute(&mut *tx)
    .await
    .context("inserting simulated providers")?;
    let providers: Vec<(i64, Uuid)> = sqlx::query_as(
        "SELECT p.id, p.uuid FROM UNNEST($1::bigint[]) WITH ORDINALITY AS t(user_id, n) \
         JOIN providers p ON p.user_id = t.user_id AND p.type = 'therapist' AND p.deleted_at IS NULL \
         ORDER BY t.n",
    )
    .bind(&user_ids)
    .fetch_all(&mut *tx)
    .await
    .context("reading simulated providers")?;
    anyhow::ensure!(
        providers.len() == user_ids.len(),
        "a simulated therapist has no provider row"
    );
    let provider_ids: Vec<i64> = providers.iter().map(|(id, _)| *id).collect();
    sqlx::query(
        "UPDATE providers p SET verification_status = 'verified', is_active = TRUE, is_available = $2, \
             average_rating = COALESCE(NULLIF(p.average_rating, 0), 4.50) \
         WHERE p.id = ANY($1)",
    )
    .bind(&provider_ids)
    .bind(spec.online_with_fix)
    .execute(&mut *tx)
    .await
    .context("verifying simulated providers")?;
    sqlx::query(
        "INSERT INTO therapist_profiles (provider_id, base_location_latitude, base_location_longitude, service_radius_km, \
             bio, years_of_experience) \
         SELECT id, lat, lng, $4, 'Simulated therapist', 5 FROM UNNEST($1::bigint[], $2::float8[], $3::float8[]) AS t(id, lat, lng) \
         ON CONFLICT (provider_id) DO UPDATE SET base_location_latitude = EXCLUDED.base_location_latitude, \
             base_location_longitude = EXCLUDED.base_location_longitude, service_radius_km = EXCLUDED.service_radius_km",
    )
    .bind(&provider_ids)
    .bind(&lats)
    .bind(&lngs)
    .bind(spec.travel_km)
    .execute(&mut *tx)
    .await
    .context("placing simulated therapists")?;

    // Each therapist's services: all of them, or three to five at random.
    let mut offer_provider = Vec::new();
    let mut offer_service = Vec::new();
    let mut offer_price = Vec::new();
    let mut therapist_services = Vec::with_capacity(spec.therapists);
    for &provider_id in &provider_ids {
        let mut chosen: Vec<&(i64, rust_decimal::Decimal, Uuid)> = if spec.all_services {
            services.iter().collect()
        } else {
            let count = rng.gen_range(3..=5).min(services.len());
            services.choose_multiple(&mut rng, count).collect()
        };
        chosen.sort_by_key(|(id, _, _)| *id);
        for (service_id, base_price, _) in &chosen {
            // Therapists price around the catalog price, in steps of 50 pesos.
            let factor = rust_decimal::Decimal::new(rng.gen_range(90..=130), 2);
            let price = (base_price * factor / rust_decimal::Decimal::from(50)).round()
                * rust_decimal::Decimal::from(50);
            offer_provider.push(provider_id);
            offer_service.push(*service_id);
            offer_price.push(price);
        }
        therapist_services.push(chosen.iter().map(|(_, _, uuid)| *uuid).collect::<Vec<_>>());
    }
    sqlx::query(
        "INSERT INTO provider_services (provider_id, service_id, price, home_service_enabled, base_distance_km, \
             per_km_surcharge, max_travel_distance_km, is_available) \
         SELECT p, s, price, TRUE, 3, 20, $4, TRUE FROM UNNEST($1::bigint[], $2::bigint[], $3::numeric[]) AS t(p, s, price) \
         ON CONFLICT (provider_id, service_id) DO UPDATE SET max_travel_distance_km = EXCLUDED.max_travel_distance_km, \
             is_available = TRUE, home_service_enabled = TRUE",
    )
    .bind(&offer_provider)
    .bind(&offer_service)
    .bind(&offer_price)
    .bind(spec.travel_km)
    .execute(&mut *tx)
    .await
    .context("offering simulated services")?;

    // Weekly schedules: the first `with_schedule` of the therapists take bookings for later
    // around the clock (a demo runs at any hour).
    let scheduled =
        ((spec.therapists as f64) * spec.with_schedule.clamp(0.0, 1.0)).round() as usize;
    if scheduled > 0 {
        let mut all_day = WeeklySchedule::empty(weekly::DEFAULT_TIMEZONE);
        for day in &mut all_day.days {
            day.push(DayRange {
                start: 0,
                end: 24 * 60,
            });
        }
        for &provider_id in provider_ids.iter().take(scheduled) {
            crate::schedule::store::replace_schedule(&mut tx, provider_id, &all_day)
                .await
                .context("giving simulated therapists a schedule")?;
        }
    }

    if spec.online_with_fix {
        sqlx::query(
            "INSERT INTO provider_locations (provider_id, latitude, longitude, accuracy, created_at) \
             SELECT id, lat, lng, 10, now() FROM UNNEST($1::bigint[], $2::float8[], $3::float8[]) AS t(id, lat, lng)",
        )
        .bind(&provider_ids)
        .bind(&lats)
        .bind(&lngs)
        .execute(&mut *tx)
        .await
        .context("storing simulated fixes")?;
    }

    let customer_people = people(spec.block, 2, spec.customers, &mut rng);
    let (_, customer_secrets) =
        upsert_users(&mut tx, &customer_people, &password_hash, Role::Customer).await?;
    let admin_people = people(spec.block, 9, 1 + DASHBOARD_ADMINS, &mut rng);
    let (_, admin_secrets) =
        upsert_users(&mut tx, &admin_people, &password_hash, Role::Admin).await?;
    tx.commit().await.context("committing the seed")?;
    // Thousands of rows arrived at once, faster than autovacuum notices: without fresh
    // statistics PostgreSQL plans the server's lookups of one therapist for tables it believes
    // nearly empty (scanning every therapist through the wrong index, 30–60 ms a lookup at 10,000
    // therapists), and its cached plans keep that until the next analyze. A city that grew over
    // months has its statistics; a seeded one gets them here.
    sqlx::query(
        "ANALYZE users, model_has_roles, personal_access_tokens, providers, therapist_profiles, \
         provider_services, provider_locations, practitioner_availability",
    )
    .execute(pool)
    .await
    .context("analyzing the seeded tables")?;

    let therapists = therapist_people
        .phones
        .into_iter()
        .zip(secrets)
        .zip(providers)
        .zip(bases)
        .zip(therapist_services)
        .map(
            |((((phone, token), (_, provider_id)), base), service_ids)| SimTherapist {
                account: SimAccount { phone, token },
                provider_id,
                base,
                service_ids,
            },
        )
        .collect();
    let customers = customer_people
        .phones
        .into_iter()
        .zip(customer_secrets)
        .map(|(phone, token)| SimAccount { phone, token })
        .collect();
    let mut admins = admin_people
        .phones
        .into_iter()
        .zip(admin_secrets)
        .map(|(phone, token)| SimAccount { phone, token });
    let admin = admins.next().expect("one admin at least");
    Ok(SeededCity {
        therapists,
        customers,
        admin,
        dashboard_admins: admins.collect(),
        service_ids: services.iter().map(|(_, _, uuid)| *uuid).collect(),
    })
}

/// A seeded wellness centre and its owner's login.
#[derive(Debug, Clone)]
pub struct SimStore {
    pub account: SimAccount,
    /// The store's provider id.
    pub store_id: Uuid,
    pub name: String,
    /// Open around the clock, so it takes walk-ins whenever the demo runs.
    pub always_open: bool,
    /// Public ids of the services it sells in store.
    pub service_ids: Vec<Uuid>,
}

/// A wellness centre of the demo city.
struct StorePlace {
    name: &'static str,
    street: &'static str,
    lat: f64,
    lng: f64,
    rooms: i32,
    always_open: bool,
}

/// Spas in Makati's business districts, where a newcomer looks first.
const MAKATI_STORES: &[StorePlace] = &[
    StorePlace {
        name: "Ayala Hilot Spa",
        street: "6750 Ayala Avenue",
        lat: 14.5566,
        lng: 121.0236,
        rooms: 6,
        always_open: true,
    },
    StorePlace {
        name: "Salcedo Healing Hands",
        street: "L.P. Leviste Street, Salcedo Village",
        lat: 14.5605,
        lng: 121.0231,
        rooms: 4,
        always_open: false,
    },
    StorePlace {
        name: "Legazpi Wellness Centre",
        street: "Rufino Street, Legazpi Village",
        lat: 14.5553,
        lng: 121.0170,
        rooms: 3,
        always_open: false,
    },
    StorePlace {
        name: "Poblacion Foot and Body",
        street: "P. Burgos Street, Poblacion",
        lat: 14.5649,
        lng: 121.0303,
        rooms: 5,
        always_open: true,
    },
    StorePlace {
        name: "Greenbelt Massage Lounge",
        street: "Esperanza Street, San Lorenzo",
        lat: 14.5521,
        lng: 121.0214,
        rooms: 8,
        always_open: false,
    },
    StorePlace {
        name: "Bel-Air Serenity Spa",
        street: "Jupiter Street, Bel-Air",
        lat: 14.5615,
        lng: 121.0300,
        rooms: 2,
        always_open: false,
    },
];

fn store_profile(place: &StorePlace) -> serde_json::Value {
    let day = if place.always_open {
        serde_json::json!([{"open": "00:00", "close": "24:00"}])
    } else {
        serde_json::json!([{"open": "10:00", "close": "23:00"}])
    };
    serde_json::json!({
        "store_name": place.name,
        "description": "Massage and hilot in store; simulated for the demo",
        "address_line1": place.street,
        "city": "Makati",
        "province": "Metro Manila",
        "lat": place.lat,
        "lng": place.lng,
        "timezone": crate::stores::DEFAULT_TIMEZONE,
        "opening_hours": {
            "monday": day, "tuesday": day, "wednesday": day, "thursday": day,
            "friday": day, "saturday": day, "sunday": day,
        },
        "amenities": ["WiFi", "Shower", "Lockers"],
        "number_of_rooms": place.rooms,
        "payment_methods": ["Cash", "Card", "GCash"],
    })
}

/// Seeds the demo's wellness centres in Makati (verified, each selling three services), through
/// the same profile code as `PUT /v1/store/profile`. Idempotent per phone block.
pub async fn seed_makati_stores(
    pool: &PgPool,
    block: PhoneBlock,
    rng_seed: u64,
) -> anyhow::Result<Vec<SimStore>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
    let password_hash = password::hash_password(SIMULATED_PASSWORD)?;
    // Kind 4, not 3: +63 913 is no mobile prefix, and login refuses such a number.
    let owners = people(block, 4, MAKATI_STORES.len(), &mut rng);
    let mut tx = pool.begin().await.context("starting the store seed")?;
    let (owner_ids, secrets) =
        upsert_users(&mut tx, &owners, &password_hash, Role::StoreOwner).await?;
    tx.commit().await.context("committing the store owners")?;
    let services: Vec<(i64, rust_decimal::Decimal, Uuid)> = sqlx::query_as(
        "SELECT id, base_price, uuid FROM services WHERE COALESCE(is_active, TRUE) AND deleted_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .context("reading the catalog")?;
    anyhow::ensure!(!services.is_empty(), "the service catalog is empty");

    let mut stores = Vec::with_capacity(MAKATI_STORES.len());
    for ((place, owner_id), (phone, token)) in MAKATI_STORES
        .iter()
        .zip(owner_ids)
        .zip(owners.phones.into_iter().zip(secrets))
    {
        let input: crate::stores::StoreProfileInput =
            serde_json::from_value(store_profile(place)).context("a demo store profile")?;
        let profile = crate::stores::validate(&input)
            .map_err(|e| anyhow::anyhow!("demo store {}: {e}", place.name))?;
        let provider_id = crate::stores::save_profile(pool, owner_id, &profile)
            .await
            .map_err(|e| anyhow::anyhow!("saving demo store {}: {e}", place.name))?;
        let store_id: Uuid = sqlx::query_scalar(
            "UPDATE providers SET verification_status = 'verified', verified_at = COALESCE(verified_at, now()), \
                 is_active = TRUE WHERE id = $1 RETURNING uuid",
        )
        .bind(provider_id)
        .fetch_one(pool)
        .await
        .context("verifying a demo store")?;
        let mut chosen: Vec<&(i64, rust_decimal::Decimal, Uuid)> = services
            .choose_multiple(&mut rng, 3.min(services.len()))
            .collect();
        chosen.sort_by_key(|(id, _, _)| *id);
        for (service_id, base_price, _) in &chosen {
            crate::stores::set_service(pool, provider_id, *service_id, *base_price, true)
                .await
                .map_err(|e| anyhow::anyhow!("pricing demo store {}: {e}", place.name))?;
        }
        stores.push(SimStore {
            account: SimAccount { phone, token },
            store_id,
            name: place.name.to_owned(),
            always_open: place.always_open,
            service_ids: chosen.iter().map(|(_, _, uuid)| *uuid).collect(),
        });
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seeded_phone_is_one_login_accepts() {
        for block in [
            PhoneBlock::Demo,
            PhoneBlock::LoadTest,
            PhoneBlock::Benchmark,
        ] {
            // Therapists, customers, store owners, dispatchers.
            for kind in [1, 2, 4, 9] {
                let number = phone(block, kind, 1_234_567);
                assert_eq!(
                    crate::accounts::phone::normalize_phone(&number).as_deref(),
                    Ok(number.as_str())
                );
            }
        }
    }

    #[test]
    fn phones_are_ten_national_digits_and_distinct_per_block() {
        assert_eq!(phone(PhoneBlock::Demo, 1, 42), "+639110000042");
        assert_eq!(phone(PhoneBlock::LoadTest, 2, 42), "+639220000042");
        assert_ne!(
            phone(PhoneBlock::Demo, 1, 0),
            phone(PhoneBlock::Benchmark, 1, 0)
        );
    }
}
