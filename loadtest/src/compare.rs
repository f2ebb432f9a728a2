//! `loadtest compare`: nearby search and ping ingest, Hilot against Redis GEOSEARCH and PostGIS.
//!
//! One run, identical data: 100,000 verified, online therapists spread uniformly over Metro
//! Manila (seeded with [`seed::seed_city`]), the same query points for every contender, a 5 km
//! radius and the 10 nearest. The contenders:
//!
//! - `hilot_http`: `GET /v1/therapists/nearby` on a running server (its live index, over HTTP);
//! - `redis_geosearch`: `GEOSEARCH key FROMLONLAT lng lat BYRADIUS 5 km ASC COUNT 10` on a
//!   dedicated Redis loaded with the same points;
//! - `postgis_seed_6_1`: the schema document's nearby query (section 6.1), `ST_DWithin` and
//!   `ORDER BY distance`;
//! - `postgis_knn_prepared`: the best PostGIS form: a table of latest positions (one row per
//!   therapist, a GiST index, no joins) and a prepared KNN (`<->`) query, as pgbench runs it.
//!
//! Each runs closed-loop (every task issues its next query as soon as the previous answered)
//! for a fixed time at concurrency 1 and 8, after a short unrecorded warm-up on the same
//! connections; every latency goes into an HDR histogram (microseconds).
//!
//! Ingest compares fixes acknowledged-and-stored per second through Hilot's therapist
//! WebSockets with a raw `COPY` of as many rows into the same `provider_locations` table.
//!
//! The server loads its live index from the database at start-up, so the order is:
//! `loadtest compare --seed-only` (seeds, vacuums, and writes the accounts and tokens to
//! `--city-file`), start the server, `loadtest compare` (reads the file). Seeding 100,000
//! therapists takes over a minute; when the file is missing or its tokens are no longer valid
//! the run seeds again, which is idempotent (same bases, fresh tokens, and the server checks
//! tokens against the database), so the running server's index stays right.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{SecondsFormat, Utc};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use hilot::geo::{distance_m, Point};
use hilot::simulator::client::{self, Incoming, Socket};
use hilot::simulator::seed::{self, CitySpec, PhoneBlock, METRO_MANILA};
use hilot::simulator::Server;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::machine::Machine;
use crate::scenario::{rss_mib, server_cpu_s};

/// Therapists in the city.
const THERAPISTS: usize = 100_000;
/// Same seed, same bases: seeding again before a run leaves the server's index valid.
const CITY_SEED: u64 = 100_000;
const RADIUS_M: u32 = 5_000;
const K: usize = 10;
const CONCURRENCIES: [usize; 2] = [1, 8];
/// Query points, uniform over Metro Manila, the same for every contender.
const QUERY_POINTS: usize = 2_000;
const QUERY_SEED: u64 = 20_261_121;
/// Query points whose answers are compared across contenders.
const AGREEMENT_POINTS: usize = 50;
/// Unrecorded queries before each measured run, on the same connections.
const WARMUP: Duration = Duration::from_secs(1);

const REDIS_KEY: &str = "hilot:bench:therapists";
/// Members per GEOADD, and GEOADDs per pipeline.
const GEOADD_MEMBERS: usize = 1_000;
const GEOADD_PER_PIPELINE: usize = 10;

/// Unrecorded seconds of pinging before ingest is measured.
const INGEST_WARMUP: Duration = Duration::from_secs(2);
/// After the measured window, how long sockets wait for their last acks.
const INGEST_DRAIN: Duration = Duration::from_secs(10);
/// A frame unanswered this long is counted lost and leaves the window.
const ACK_LOST_AFTER: Duration = Duration::from_secs(10);
/// Sockets opened at once.
const OPEN_PARALLELISM: usize = 50;
/// Each ping moves the therapist this far (north, then back to base).
const PING_STEP_M: f64 = 3.0;
const COPY_CHUNK_ROWS: usize = 10_000;
const COPY_SQL: &str = "COPY provider_locations (provider_id, latitude, longitude, accuracy, created_at) FROM STDIN (FORMAT csv)";

/// The schema document's nearby query (section 6.1), parameterised by the point ($1 = lng,
/// $2 = lat). Its plan on 100k therapists (PostgreSQL 15, PostGIS 3.3, at the city centre):
///
/// ```text
/// Limit
///   ->  Gather Merge (2 workers)
///         ->  Sort (top-N heapsort), key st_distance(base_location, pt, true) / 1000
///               ->  Nested Loop
///                     ->  Nested Loop
///                           ->  Parallel Bitmap Heap Scan on therapist_profiles tp
///                                 Filter: st_dwithin(base_location, pt, 5000, true)   (1600 removed per worker)
///                                 ->  Bitmap Index Scan on idx_therapist_profiles_base_location (13,213 rows)
///                                       Index Cond: (base_location && _st_expand(pt, 5000))
///                           ->  Index Scan using idx_providers_available_therapists on providers p (8,414 loops)
///                     ->  Index Scan using users_pkey on users u (8,414 loops)
/// ```
///
/// The GiST index only narrows to a box: every therapist within 5 km (about 8,400 here) is
/// joined and gets a spheroid distance before the top 10 are kept, so the cost grows with the
/// density inside the radius, not with k.
const SEED_6_1_SQL: &str = "\
SELECT p.id, u.first_name, u.last_name, tp.specializations, p.average_rating,
       ST_Distance(tp.base_location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography) / 1000 AS distance_km
FROM providers p JOIN users u ON p.user_id = u.id JOIN therapist_profiles tp ON p.id = tp.provider_id
WHERE p.type = 'therapist' AND p.is_available = TRUE AND p.verification_status = 'verified'
  AND ST_DWithin(tp.base_location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, 5000)
ORDER BY distance_km ASC LIMIT 10";

/// The table of latest positions the best PostGIS form reads: one row per therapist, their
/// latest fix, a GiST index; what a PostGIS-only dispatch would keep up to date on each ping.
const LATEST_POSITIONS_SQL: &[&str] = &[
    "DROP TABLE IF EXISTS bench_latest_positions",
    "CREATE TABLE bench_latest_positions (provider_id bigint PRIMARY KEY, location geography(Point, 4326) NOT NULL)",
    "INSERT INTO bench_latest_positions \
       SELECT DISTINCT ON (provider_id) provider_id, location FROM provider_locations \
       WHERE location IS NOT NULL ORDER BY provider_id, created_at DESC",
    "CREATE INDEX bench_latest_positions_location ON bench_latest_positions USING gist (location)",
    "VACUUM (ANALYZE) bench_latest_positions",
];

/// The best PostGIS form: a KNN index scan over the latest positions, stopped after 10 rows,
/// no joins (every therapist in the city is eligible); the radius is applied to the 10 (client
/// side). Its plan on 100k therapists (PostgreSQL 15, PostGIS 3.3):
///
/// ```text
/// Limit (actual rows=10)
///   ->  Index Scan using bench_latest_positions_location on bench_latest_positions (actual rows=10)
///         Order By: (location <-> '0101000020E6...'::geography)
/// ```
///
/// so the GiST index is walked in distance order and about `k` entries are read whatever the
/// density. `run` checks the plan again (`knn_plan_uses_gist_index` in the JSON). sqlx
/// prepares the statement once per connection and reuses it; `scripts/bench` runs the same
/// statement through `pgbench -M prepared` as a cross-check.
const KNN_SQL: &str = "\
SELECT provider_id, ST_Distance(location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography) AS d
FROM bench_latest_positions
ORDER BY location <-> ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography
LIMIT 10";

/// [`KNN_SQL`] with the public id too, for the agreement check (not timed).
const KNN_CHECK_SQL: &str = "\
SELECT l.provider_id, p.uuid, ST_Distance(l.location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography) AS d
FROM (SELECT provider_id, location FROM bench_latest_positions
      ORDER BY location <-> ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography LIMIT 10) l
JOIN providers p ON p.id = l.provider_id
ORDER BY l.location <-> ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpClient {
    /// A minimal keep-alive HTTP/1.1 client over a TCP stream, one connection per task.
    Raw,
    /// reqwest (hyper), one shared keep-alive pool.
    Reqwest,
}

impl HttpClient {
    fn label(self) -> &'static str {
        match self {
            HttpClient::Raw => "raw",
            HttpClient::Reqwest => "reqwest",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The running Hilot server (loopback), started after `--seed-only`.
    #[arg(long, env = "HILOT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's database (default: the local cluster of `scripts/dev-env`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A dedicated Redis for GEOSEARCH (its key `hilot:bench:therapists` is replaced).
    #[arg(long, required_unless_present = "seed_only")]
    pub redis_url: Option<String>,
    /// Measured seconds per contender and concurrency.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Measured seconds of ping ingest (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    pub ingest_seconds: u64,
    /// Therapist WebSockets streaming pings.
    #[arg(long, default_value_t = 500)]
    pub ingest_sockets: usize,
    /// Unacknowledged pings each socket keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub ingest_window: usize,
    /// Seed the city, write `--city-file`, and exit (run before starting the server, which
    /// loads the city at start-up).
    #[arg(long)]
    pub seed_only: bool,
    /// The seeded city's accounts and tokens, written by `--seed-only` (it holds bearer tokens
    /// of the benchmark accounts, valid two days). A run reads it when its tokens are still
    /// valid in the database, and otherwise seeds again (idempotent: same bases).
    #[arg(long, default_value = "target/compare-city.json")]
    pub city_file: PathBuf,
    /// Seed again even when `--city-file` is valid.
    #[arg(long)]
    pub reseed: bool,
    /// HTTP client for the Hilot contender.
    #[arg(long, value_enum, default_value = "raw")]
    pub http_client: HttpClient,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/compare.json")]
    pub json: PathBuf,
    /// criterion's `estimates.json` of `nearby_100k_5km_k10`, for the in-process figure.
    #[arg(long)]
    pub criterion_json: Option<PathBuf>,
    /// Write the inputs of the cross-checks into this folder: `nearby.lua` (wrk: Hilot's nearby
    /// on the same query points), `knn.pgbench` (pgbench: the same KNN statement on random
    /// points of the same city) and `redis-points.txt` (redis-benchmark: GEOSEARCH points).
    #[arg(long)]
    pub tool_inputs: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    therapists: usize,
    radius_m: u32,
    k: usize,
    seconds: u64,
    query_points: usize,
    http_client: &'static str,
    /// Seconds this run spent seeding; null when it used the city seeded by `--seed-only`.
    seed_s: Option<f64>,
    nearby: Vec<NearbyResult>,
    ratios: Vec<Ratio>,
    /// criterion's mean for one in-process index query, µs.
    in_process_us: Option<f64>,
    ingest: IngestReport,
    agreement: Agreement,
    knn_plan_uses_gist_index: bool,
    /// What the PostGIS KNN contender reads: `latest_positions` (one row per therapist, no
    /// joins). Reports of earlier runs, made on the joined profile tables, lack it.
    knn_form: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct NearbyResult {
    #[serde(skip)]
    all_queries: u64,
    contender: &'static str,
    concurrency: usize,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    queries: u64,
    errors: u64,
    /// Therapists per answer (within 5 km), on average: 10 on this data.
    mean_results: f64,
    /// Hilot only: the server's CPU per query (warm-up included), from its
    /// `process_cpu_seconds_total`.
    server_cpu_us_per_query: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Ratio {
    anchor: &'static str,
    concurrency: usize,
    /// Hilot's queries per second ÷ the anchor's, at the same concurrency.
    hilot_over_anchor: f64,
}

#[derive(Debug, Default, Serialize)]
struct IngestReport {
    hilot_rows_per_s: f64,
    copy_rows_per_s: f64,
    /// Hilot ÷ COPY.
    ratio: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
    /// Acks with `stored: true` ÷ all acks, in the measured window.
    stored_fraction: f64,
    rss_mib_before: Option<f64>,
    rss_mib_after: Option<f64>,
    sockets: usize,
    window: usize,
    measured_s: f64,
    /// Stored acks in the measured window, and rows copied.
    hilot_rows: u64,
    copy_rows: u64,
    /// Stored acks per second of the window, to show it was steady.
    hilot_per_second: Vec<u64>,
    /// Error frames by code, plus `lost` (no ack within 10 s) and `socket_closed`.
    errors: BTreeMap<String, u64>,
    /// The server's CPU per ping acknowledged (every ack, warm-up included).
    server_cpu_us_per_ping: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Agreement {
    points: usize,
    /// Same set of provider ids as PostGIS KNN within 5 km.
    hilot_eq_postgis: usize,
    hilot_eq_redis: usize,
    /// The section 6.1 query against KNN: the two PostGIS forms agree.
    postgis_seed_eq_knn: usize,
}

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let database_url = match &args.database_url {
        Some(url) if !url.is_empty() => url.clone(),
        _ => hilot::config::Settings::default().resolved_database_url()?,
    };
    let pool = PgPoolOptions::new()
        .max_connections(CONCURRENCIES.iter().copied().max().unwrap_or(1) as u32 + 2)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect(&database_url)
        .await
        .context("connecting to the database")?;

    let reusable = if args.seed_only || args.reseed {
        None
    } else {
        City::read_valid(&args.city_file, &pool, args.ingest_sockets).await
    };
    let (city, seed_s) = match reusable {
        Some(city) => {
            eprintln!(
                "using the city seeded earlier ({}, tokens valid)",
                args.city_file.display()
            );
            (city, None)
        }
        None => {
            let started = Instant::now();
            let city = seed_city(&pool).await?;
            let seed_s = round(started.elapsed().as_secs_f64(), 1);
            eprintln!(
                "seeded {} therapists in {seed_s} s (service {})",
                city.therapists.len(),
                city.service_id
            );
            city.write(&args.city_file)?;
            (city, Some(seed_s))
        }
    };
    if args.seed_only {
        return Ok(());
    }
    let redis_url = args.redis_url.clone().context("--redis-url is required")?;

    let server = Server::new(&args.url);
    server.wait_ready(Duration::from_secs(60)).await?;
    match index_size(&server).await {
        Some(n) if n < THERAPISTS as u64 => eprintln!(
            "warning: the server's index holds {n} therapists, not {THERAPISTS}: \
             start it after `loadtest compare --seed-only`"
        ),
        Some(_) => {}
        None => eprintln!("warning: cannot read hilot_index_therapists from the server's /metrics"),
    }
    let ctx = Arc::new(Ctx::new(&args, &city, &redis_url, pool.clone()).await?);

    let loaded = load_redis(&ctx.redis, &city).await?;
    eprintln!(
        "redis: {} members in {:.1} s",
        THERAPISTS,
        loaded.as_secs_f64()
    );

    for statement in LATEST_POSITIONS_SQL {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .with_context(|| format!("preparing the latest positions: {statement}"))?;
    }
    if let Some(dir) = &args.tool_inputs {
        write_tool_inputs(dir, &ctx)?;
    }
    let knn_plan_uses_gist_index = explain_plans(&pool).await?;

    let bases: HashMap<Uuid, Point> = city
        .therapists
        .iter()
        .map(|t| (t.provider_id, t.base()))
        .collect();
    let agreement = check_agreement(&ctx, &bases).await?;
    eprintln!(
        "agreement over {} points: hilot = postgis {}, hilot = redis {}, postgis 6.1 = knn {}",
        agreement.points,
        agreement.hilot_eq_postgis,
        agreement.hilot_eq_redis,
        agreement.postgis_seed_eq_knn
    );

    let mut nearby = Vec::new();
    for contender in Contender::ALL {
        for concurrency in CONCURRENCIES {
            eprintln!(
                "{} at concurrency {concurrency}: {} s warm-up, {} s measured ...",
                contender.name(),
                WARMUP.as_secs(),
                args.seconds
            );
            let cpu_before = match contender {
                Contender::HilotHttp => server_cpu_s(&server).await,
                _ => None,
            };
            let mut result = measure(
                contender,
                &ctx,
                concurrency,
                Duration::from_secs(args.seconds),
            )
            .await?;
            if let (Some(before), Some(after)) = (cpu_before, server_cpu_s(&server).await) {
                result.server_cpu_us_per_query = (result.all_queries > 0)
                    .then(|| round((after - before) * 1e6 / result.all_queries as f64, 1));
            }
            eprintln!(
                "  {:.0} q/s, p50 {} ms, p99 {} ms, {} errors",
                result.qps, result.p50_ms, result.p99_ms, result.errors
            );
            nearby.push(result);
        }
    }
    let ratios = ratios(&nearby);

    let in_process_us = args.criterion_json.as_deref().and_then(criterion_mean_us);

    eprintln!(
        "ingest through Hilot: {} sockets, window {}, {} s warm-up, {} s measured ...",
        args.ingest_sockets,
        args.ingest_window,
        INGEST_WARMUP.as_secs(),
        args.ingest_seconds
    );
    let mut ingest = hilot_ingest(&server, &city, &args).await?;
    let copy_rows = if ingest.hilot_rows > 0 {
        ingest.hilot_rows as usize
    } else {
        100_000
    };
    eprintln!("ingest through COPY: {copy_rows} rows ...");
    let (copied, copy_s) = copy_ingest(&pool, &city, ingest.sockets.max(1), copy_rows).await?;
    ingest.copy_rows = copied;
    ingest.copy_rows_per_s = round(copied as f64 / copy_s, 0);
    ingest.ratio = if ingest.copy_rows_per_s > 0.0 {
        round(ingest.hilot_rows_per_s / ingest.copy_rows_per_s, 3)
    } else {
        0.0
    };

    let report = Report {
        machine: Machine::this(),
        therapists: city.therapists.len(),
        radius_m: RADIUS_M,
        k: K,
        seconds: args.seconds,
        query_points: QUERY_POINTS,
        http_client: args.http_client.label(),
        seed_s,
        nearby,
        ratios,
        in_process_us,
        ingest,
        agreement,
        knn_plan_uses_gist_index,
        knn_form: "latest_positions",
    };
    print_report(&report);
    if let Some(parent) = args.json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    Ok(())
}

/// What a run needs of the seeded city; `--seed-only` writes it to `--city-file`.
#[derive(Debug, Serialize, Deserialize)]
struct City {
    rng_seed: u64,
    service_id: Uuid,
    customer_token: String,
    /// An admin's: the agreement check asks as one, since admins see exact positions and
    /// customers see each therapist at their cell's centre (the contenders rank by exact
    /// positions).
    admin_token: String,
    therapists: Vec<CityTherapist>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CityTherapist {
    provider_id: Uuid,
    base: [f64; 2],
    token: String,
}

impl CityTherapist {
    fn base(&self) -> Point {
        Point::new(self.base[0], self.base[1])
    }
}

impl City {
    /// Writes the city (owner-only: it holds bearer tokens).
    fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(&serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The city in `path` when it is this benchmark's and the tokens a run uses (the
    /// customer's and the ingest therapists') are still valid in the database.
    async fn read_valid(path: &std::path::Path, pool: &PgPool, sockets: usize) -> Option<City> {
        let text = std::fs::read(path).ok()?;
        let city: City = match serde_json::from_slice(&text) {
            Ok(city) => city,
            Err(error) => {
                eprintln!("ignoring {}: {error}", path.display());
                return None;
            }
        };
        if city.rng_seed != CITY_SEED || city.therapists.len() != THERAPISTS {
            eprintln!("ignoring {}: another city", path.display());
            return None;
        }
        let digests: Vec<String> = [&city.customer_token, &city.admin_token]
            .into_iter()
            .chain(city.therapists.iter().take(sockets).map(|t| &t.token))
            .map(|secret| hilot::accounts::tokens::digest(secret))
            .collect();
        let valid: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM personal_access_tokens WHERE token = ANY($1) \
             AND (expires_at IS NULL OR expires_at > now() + interval '1 hour')",
        )
        .bind(&digests)
        .fetch_one(pool)
        .await;
        match valid {
            Ok(n) if n == digests.len() as i64 => Some(city),
            Ok(_) => {
                eprintln!(
                    "ignoring {}: its tokens are no longer valid",
                    path.display()
                );
                None
            }
            Err(error) => {
                eprintln!("ignoring {}: {error}", path.display());
                None
            }
        }
    }
}

/// Seeds (or re-seeds: same bases, fresh tokens) the benchmark city, then vacuums and
/// analyses the tables the PostGIS queries read, so they start from fresh statistics and
/// visibility maps rather than from 100,000 dead row versions.
async fn seed_city(pool: &PgPool) -> anyhow::Result<City> {
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("static template"),
    );
    spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    spinner.set_message(format!(
        "seeding {THERAPISTS} therapists over Metro Manila ..."
    ));
    spinner.enable_steady_tick(Duration::from_millis(250));
    let seeded = seed::seed_city(
        pool,
        &CitySpec {
            block: PhoneBlock::Benchmark,
            therapists: THERAPISTS,
            customers: 8,
            area: METRO_MANILA,
            travel_km: 20,
            all_services: true,
            online_with_fix: true,
            rng_seed: CITY_SEED,
            with_schedule: 0.0,
        },
    )
    .await;
    let seeded = match seeded {
        Ok(seeded) => seeded,
        Err(error) => {
            spinner.finish_and_clear();
            return Err(error.context("seeding the benchmark city"));
        }
    };
    spinner.set_message("vacuuming and analysing ...");
    let vacuum = sqlx::query(
        "VACUUM (ANALYZE) providers, users, therapist_profiles, provider_services, provider_locations",
    )
    .execute(pool)
    .await;
    spinner.finish_and_clear();
    vacuum.context("vacuuming after the seed")?;
    let service_id = *seeded.service_ids.first().context("no services")?;
    let customer_token = seeded
        .customers
        .first()
        .context("no customers")?
        .token
        .clone();
    Ok(City {
        rng_seed: CITY_SEED,
        service_id,
        customer_token,
        admin_token: seeded.admin.token.clone(),
        therapists: seeded
            .therapists
            .into_iter()
            .map(|t| CityTherapist {
                provider_id: t.provider_id,
                base: [t.base.lat, t.base.lng],
                token: t.account.token,
            })
            .collect(),
    })
}

/// `hilot_index_therapists` from the server's `/metrics`: therapists in its live index.
async fn index_size(server: &Server) -> Option<u64> {
    server
        .metric("hilot_index_therapists")
        .await
        .map(|n| n as u64)
}

/// The same 2,000 query points every run.
fn query_points() -> Vec<Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(QUERY_SEED);
    (0..QUERY_POINTS)
        .map(|_| METRO_MANILA.random_point(&mut rng))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The contenders
// ---------------------------------------------------------------------------------------------

/// What every query needs.
struct Ctx {
    points: Vec<Point>,
    http_client: HttpClient,
    /// `http://host:port[/prefix]`, for reqwest.
    base_url: String,
    /// For the raw client: where to connect, the Host header, and any path prefix.
    http_addr: SocketAddr,
    http_host: String,
    http_prefix: String,
    token: String,
    /// For the agreement check (exact positions); the timed queries use `token`, a customer's.
    admin_token: String,
    service_id: Uuid,
    reqwest: reqwest::Client,
    redis: redis::Client,
    pool: PgPool,
}

impl Ctx {
    async fn new(
        args: &CompareArgs,
        city: &City,
        redis_url: &str,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        let base_url = args.url.trim_end_matches('/').to_owned();
        let (http_host, http_prefix) = split_http_url(&base_url)?;
        let http_addr = tokio::net::lookup_host(&http_host)
            .await
            .with_context(|| format!("resolving {http_host}"))?
            .next()
            .with_context(|| format!("{http_host} resolves to nothing"))?;
        Ok(Self {
            points: query_points(),
            http_client: args.http_client,
            base_url,
            http_addr,
            http_host,
            http_prefix,
            token: city.customer_token.clone(),
            admin_token: city.admin_token.clone(),
            service_id: city.service_id,
            reqwest: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .context("building the HTTP client")?,
            redis: redis::Client::open(redis_url).context("parsing --redis-url")?,
            pool,
        })
    }

    /// Path and query of the nearby request.
    fn nearby_path(&self, p: Point) -> String {
        format!(
            "{}/v1/therapists/nearby?lat={}&lng={}&service_id={}&radius_m={RADIUS_M}&limit={K}",
            self.http_prefix, p.lat, p.lng, self.service_id
        )
    }
}

/// `http://host[:port][/prefix]` → (`host:port`, `/prefix`).
fn split_http_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, prefix.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    HilotHttp,
    RedisGeosearch,
    PostgisSeed,
    PostgisKnn,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::HilotHttp,
        Contender::RedisGeosearch,
        Contender::PostgisSeed,
        Contender::PostgisKnn,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::HilotHttp => "hilot_http",
            Contender::RedisGeosearch => "redis_geosearch",
            Contender::PostgisSeed => "postgis_seed_6_1",
            Contender::PostgisKnn => "postgis_knn_prepared",
        }
    }
}

/// One task's connection to its contender.
enum Worker {
    HttpRaw(Box<RawHttp>),
    HttpReqwest,
    Redis(redis::aio::MultiplexedConnection),
    PgSeed(PoolConnection<Postgres>),
    PgKnn(PoolConnection<Postgres>),
}

#[derive(Deserialize)]
struct NearbyAnswer {
    therapists: Vec<NearbyTherapist>,
}

#[derive(Deserialize)]
struct NearbyTherapist {
    provider_id: Uuid,
}

impl Worker {
    async fn connect(contender: Contender, ctx: &Ctx) -> anyhow::Result<Self> {
        Ok(match contender {
            Contender::HilotHttp => match ctx.http_client {
                HttpClient::Raw => Worker::HttpRaw(Box::new(RawHttp::new(ctx))),
                HttpClient::Reqwest => Worker::HttpReqwest,
            },
            Contender::RedisGeosearch => Worker::Redis(
                ctx.redis
                    .get_multiplexed_async_connection()
                    .await
                    .context("connecting to Redis")?,
            ),
            Contender::PostgisSeed => Worker::PgSeed(ctx.pool.acquire().await?),
            Contender::PostgisKnn => Worker::PgKnn(ctx.pool.acquire().await?),
        })
    }

    /// One query; how many therapists it found within the radius.
    async fn query(&mut self, ctx: &Ctx, p: Point) -> anyhow::Result<usize> {
        match self {
            Worker::HttpRaw(http) => {
                let body = http.get(&ctx.nearby_path(p)).await?;
                let answer: NearbyAnswer =
                    serde_json::from_slice(body).context("reading the nearby answer")?;
                Ok(answer.therapists.len())
            }
            Worker::HttpReqwest => Ok(hilot_nearby(ctx, &ctx.token, p).await?.len()),
            Worker::Redis(conn) => Ok(geosearch(conn, p).await?.len()),
            Worker::PgSeed(conn) => {
                let rows = sqlx::query(SEED_6_1_SQL)
                    .bind(p.lng)
                    .bind(p.lat)
                    .fetch_all(&mut **conn)
                    .await?;
                for row in &rows {
                    let _: i64 = row.try_get(0)?;
                    let _: Option<String> = row.try_get(1)?;
                    let _: Option<String> = row.try_get(2)?;
                    let _: Option<serde_json::Value> = row.try_get(3)?;
                    // NUMERIC: read as received (no decimal type in this crate).
                    let _ = row.try_get_raw(4)?;
                    let _: f64 = row.try_get(5)?;
                }
                Ok(rows.len())
            }
            Worker::PgKnn(conn) => {
                let rows: Vec<(i64, f64)> = sqlx::query_as(KNN_SQL)
                    .bind(p.lng)
                    .bind(p.lat)
                    .fetch_all(&mut **conn)
                    .await?;
                Ok(rows
                    .iter()
                    .filter(|(_, d)| *d <= f64::from(RADIUS_M))
                    .count())
            }
        }
    }
}

/// Hilot's answer through reqwest, asked with `token`: the provider ids, nearest first.
async fn hilot_nearby(ctx: &Ctx, token: &str, p: Point) -> anyhow::Result<Vec<Uuid>> {
    let url = format!(
        "{}/v1/therapists/nearby?lat={}&lng={}&service_id={}&radius_m={RADIUS_M}&limit={K}",
        ctx.base_url, p.lat, p.lng, ctx.service_id
    );
    let response = ctx.reqwest.get(url).bearer_auth(token).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "nearby answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let answer: NearbyAnswer =
        serde_json::from_slice(&body).context("reading the nearby answer")?;
    Ok(answer
        .therapists
        .into_iter()
        .map(|t| t.provider_id)
        .collect())
}

async fn geosearch(
    conn: &mut redis::aio::MultiplexedConnection,
    p: Point,
) -> anyhow::Result<Vec<String>> {
    let members: Vec<String> = redis::cmd("GEOSEARCH")
        .arg(REDIS_KEY)
        .arg("FROMLONLAT")
        .arg(p.lng)
        .arg(p.lat)
        .arg("BYRADIUS")
        .arg(RADIUS_M / 1000)
        .arg("km")
        .arg("ASC")
        .arg("COUNT")
        .arg(K)
        .query_async(conn)
        .await?;
    Ok(members)
}

/// A minimal keep-alive HTTP/1.1 GET client: one request at a time, `Content-Length` bodies.
/// Several times cheaper per request than a general client, which matters when client and
/// server share two cores.
struct RawHttp {
    addr: SocketAddr,
    /// Everything after the request line: Host, Authorization, the blank line.
    head: String,
    stream: Option<TcpStream>,
    /// Requests answered on the current connection.
    served: u64,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl RawHttp {
    fn new(ctx: &Ctx) -> Self {
        Self {
            addr: ctx.http_addr,
            head: format!(
                "Host: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\n\r\n",
                ctx.http_host, ctx.token
            ),
            stream: None,
            served: 0,
            out: Vec::with_capacity(512),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// GETs `path`; the body of a 2xx answer.
    async fn get(&mut self, path: &str) -> anyhow::Result<&[u8]> {
        self.out.clear();
        self.out.extend_from_slice(b"GET ");
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\n");
        self.out.extend_from_slice(self.head.as_bytes());
        let mut attempt = 0;
        let (status, body) = loop {
            attempt += 1;
            if self.stream.is_none() {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .with_context(|| format!("connecting to {}", self.addr))?;
                stream.set_nodelay(true)?;
                self.stream = Some(stream);
                self.served = 0;
            }
            let reused = self.served > 0;
            match self.exchange().await {
                Ok(answer) => break answer,
                Err(error) => {
                    self.stream = None;
                    // The server may close an idle keep-alive connection: retry once.
                    if !(reused && attempt == 1) {
                        return Err(error);
                    }
                }
            }
        };
        let body = &self.buf[body];
        if !(200..300).contains(&status) {
            bail!(
                "nearby answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(body)
    }

    /// Writes the request and reads one answer into `buf`: its status and body range.
    async fn exchange(&mut self) -> anyhow::Result<(u16, std::ops::Range<usize>)> {
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.out).await?;
        self.buf.clear();
        let mut head: Option<(u16, usize, usize, bool)> = None;
        loop {
            if let Some((status, body_start, length, close)) = head {
                if self.buf.len() >= body_start + length {
                    self.served += 1;
                    if close {
                        self.stream = None;
                    }
                    return Ok((status, body_start..body_start + length));
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let stream = self.stream.as_mut().expect("connected");
            let n = stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            if head.is_none() {
                head = parse_head(&self.buf)?;
            }
        }
    }
}

/// Status, body offset, Content-Length and `Connection: close` of a complete header block.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(u16, usize, usize, bool)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("non-UTF-8 response headers")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked answers are not supported by the raw client; use --http-client reqwest");
        }
    }
    let length = length.context("an answer without Content-Length")?;
    Ok(Some((status, end + 4, length, close)))
}

// ---------------------------------------------------------------------------------------------
// Closed-loop measurement
// ---------------------------------------------------------------------------------------------

struct Tally {
    histogram: Histogram<u64>,
    queries: u64,
    /// Every answered query, warm-up included (for CPU per query).
    all_queries: u64,
    results: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: new_histogram(),
            queries: 0,
            all_queries: 0,
            results: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms of equal bounds add");
        self.queries += other.queries;
        self.all_queries += other.all_queries;
        self.results += other.results;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    hilot::simulator::stats::latency_histogram()
}

/// `concurrency` tasks, each with its own connection, query back to back: a warm-up, then
/// `duration` measured. Queries that start and finish inside the window count.
async fn measure(
    contender: Contender,
    ctx: &Arc<Ctx>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<NearbyResult> {
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        workers.push(Worker::connect(contender, ctx).await?);
    }
    let warm_end = Instant::now() + WARMUP;
    let end = warm_end + duration;
    let mut tasks = JoinSet::new();
    let n = ctx.points.len();
    for (i, mut worker) in workers.into_iter().enumerate() {
        let ctx = Arc::clone(ctx);
        tasks.spawn(async move {
            let mut tally = Tally::new();
            let mut next = i * n / concurrency;
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let point = ctx.points[next % n];
                next += 1;
                let result = worker.query(&ctx, point).await;
                let done = Instant::now();
                let measured = start >= warm_end && done <= end;
                match result {
                    Ok(found) if measured => {
                        tally.all_queries += 1;
                        let us = (done - start).as_micros() as u64;
                        tally.histogram.saturating_record(us.max(1));
                        tally.queries += 1;
                        tally.results += found as u64;
                    }
                    Ok(_) => tally.all_queries += 1,
                    Err(error) => {
                        tally.errors += u64::from(measured);
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                        if !measured && start < warm_end {
                            // A failing warm-up: do not spin; the measured run shows it.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.context("a query task panicked")?);
    }
    if let Some(error) = &total.first_error {
        eprintln!("  {} error: {error}", contender.name());
    }
    let h = &total.histogram;
    Ok(NearbyResult {
        contender: contender.name(),
        concurrency,
        qps: round(total.queries as f64 / duration.as_secs_f64(), 1),
        p50_ms: quantile_ms(h, 0.5),
        p99_ms: quantile_ms(h, 0.99),
        p999_ms: quantile_ms(h, 0.999),
        max_ms: if h.is_empty() {
            0.0
        } else {
            round(h.max() as f64 / 1000.0, 3)
        },
        queries: total.queries,
        errors: total.errors,
        mean_results: if total.queries == 0 {
            0.0
        } else {
            round(total.results as f64 / total.queries as f64, 2)
        },
        server_cpu_us_per_query: None,
        all_queries: total.all_queries,
    })
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    round(h.value_at_quantile(q) as f64 / 1000.0, 3)
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn ratios(nearby: &[NearbyResult]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for anchor in nearby {
        if anchor.contender == Contender::HilotHttp.name() {
            continue;
        }
        let Some(hilot) = nearby.iter().find(|r| {
            r.contender == Contender::HilotHttp.name() && r.concurrency == anchor.concurrency
        }) else {
            continue;
        };
        out.push(Ratio {
            anchor: anchor.contender,
            concurrency: anchor.concurrency,
            hilot_over_anchor: if anchor.qps > 0.0 {
                round(hilot.qps / anchor.qps, 2)
            } else {
                0.0
            },
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Set-up and checks
// ---------------------------------------------------------------------------------------------

/// Replaces the Redis key with every therapist's base, pipelined GEOADDs.
async fn load_redis(client: &redis::Client, city: &City) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    redis::cmd("DEL")
        .arg(REDIS_KEY)
        .query_async::<()>(&mut conn)
        .await?;
    for batch in city.therapists.chunks(GEOADD_MEMBERS * GEOADD_PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for chunk in batch.chunks(GEOADD_MEMBERS) {
            let mut cmd = redis::cmd("GEOADD");
            cmd.arg(REDIS_KEY);
            for t in chunk {
                let base = t.base();
                cmd.arg(base.lng)
                    .arg(base.lat)
                    .arg(t.provider_id.to_string());
            }
            pipe.add_command(cmd).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.context("GEOADD")?;
    }
    let members: usize = redis::cmd("ZCARD")
        .arg(REDIS_KEY)
        .query_async(&mut conn)
        .await?;
    anyhow::ensure!(
        members == city.therapists.len(),
        "Redis holds {members} members, expected {}",
        city.therapists.len()
    );
    Ok(started.elapsed())
}

/// Prints both PostGIS plans for the city centre; whether KNN walks the GiST index in order.
async fn explain_plans(pool: &PgPool) -> anyhow::Result<bool> {
    let centre = METRO_MANILA.center();
    let literal = |sql: &str| {
        sql.replace("$1", &format!("{}", centre.lng))
            .replace("$2", &format!("{}", centre.lat))
    };
    let mut uses_gist = false;
    for (name, sql) in [
        (Contender::PostgisSeed.name(), SEED_6_1_SQL),
        (Contender::PostgisKnn.name(), KNN_SQL),
    ] {
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, COSTS OFF) {}", literal(sql)))
                .fetch_all(pool)
                .await
                .with_context(|| format!("explaining {name}"))?;
        eprintln!("plan of {name} at the city centre:");
        for line in &plan {
            eprintln!("  {line}");
        }
        if sql == KNN_SQL {
            let text = plan.join("\n");
            uses_gist = text.contains("Index Scan using bench_latest_positions_location")
                && text.contains("Order By: (location <->");
            if !uses_gist {
                eprintln!("warning: the KNN query does not walk the GiST index in distance order");
            }
        }
    }
    Ok(uses_gist)
}

/// For the first query points: does every contender find the same therapists?
async fn check_agreement(ctx: &Ctx, bases: &HashMap<Uuid, Point>) -> anyhow::Result<Agreement> {
    let mut redis = ctx
        .redis
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let mut conn = ctx.pool.acquire().await?;
    let mut agreement = Agreement {
        points: AGREEMENT_POINTS.min(ctx.points.len()),
        ..Agreement::default()
    };
    let mut reported = 0;
    for &p in ctx.points.iter().take(agreement.points) {
        let hilot: BTreeSet<Uuid> = hilot_nearby(ctx, &ctx.admin_token, p)
            .await
            .context("the agreement check's nearby query")?
            .into_iter()
            .collect();
        let knn: Vec<(i64, Uuid, f64)> = sqlx::query_as(KNN_CHECK_SQL)
            .bind(p.lng)
            .bind(p.lat)
            .fetch_all(&mut *conn)
            .await?;
        let knn: Vec<(i64, Uuid, f64)> = knn
            .into_iter()
            .filter(|(_, _, d)| *d <= f64::from(RADIUS_M))
            .collect();
        let knn_uuids: BTreeSet<Uuid> = knn.iter().map(|(_, u, _)| *u).collect();
        let knn_ids: BTreeSet<i64> = knn.iter().map(|(id, _, _)| *id).collect();
        let seed_ids: BTreeSet<i64> = sqlx::query(SEED_6_1_SQL)
            .bind(p.lng)
            .bind(p.lat)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        let redis_uuids: BTreeSet<Uuid> = geosearch(&mut redis, p)
            .await?
            .iter()
            .map(|m| m.parse::<Uuid>())
            .collect::<Result<_, _>>()
            .context("a Redis member that is not a uuid")?;
        agreement.hilot_eq_postgis += usize::from(hilot == knn_uuids);
        agreement.hilot_eq_redis += usize::from(hilot == redis_uuids);
        agreement.postgis_seed_eq_knn += usize::from(seed_ids == knn_ids);
        if (hilot != knn_uuids || hilot != redis_uuids) && reported < 5 {
            reported += 1;
            let describe = |ids: &mut dyn Iterator<Item = &Uuid>| -> String {
                ids.map(|id| match bases.get(id) {
                    Some(base) => format!("{id} at {:.1} m", distance_m(p, *base)),
                    None => format!("{id} (unknown)"),
                })
                .collect::<Vec<_>>()
                .join(", ")
            };
            eprintln!(
                "disagreement at ({}, {}): {} from hilot, {} from postgis, {} from redis",
                p.lat,
                p.lng,
                hilot.len(),
                knn_uuids.len(),
                redis_uuids.len()
            );
            eprintln!(
                "  only hilot vs postgis: [{}]; only postgis: [{}]",
                describe(&mut hilot.difference(&knn_uuids)),
                describe(&mut knn_uuids.difference(&hilot))
            );
            eprintln!(
                "  only hilot vs redis: [{}]; only redis: [{}]",
                describe(&mut hilot.difference(&redis_uuids)),
                describe(&mut redis_uuids.difference(&hilot))
            );
        }
    }
    Ok(agreement)
}

/// The cross-checks' inputs: wrk's Lua script over the same query points and token, pgbench's
/// script of the same KNN statement on random points of the same city, and the points
/// redis-benchmark asks GEOSEARCH about.
fn write_tool_inputs(dir: &std::path::Path, ctx: &Ctx) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut lua = String::from(
        "-- Generated by `loadtest compare`: Hilot's nearby on the benchmark's query points.\n\
         -- wrk -t2 -c8 -d8s --latency -s nearby.lua http://127.0.0.1:PORT\nlocal paths = {\n",
    );
    for p in &ctx.points {
        let _ = writeln!(lua, "  \"{}\",", ctx.nearby_path(*p));
    }
    let _ = write!(
        lua,
        "}}\nlocal i = 0\nwrk.headers[\"Authorization\"] = \"Bearer {}\"\n\
         request = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
        ctx.token
    );
    write_private(&dir.join("nearby.lua"), &lua)?;
    let (a, span_lat, span_lng) = (
        METRO_MANILA,
        METRO_MANILA.north - METRO_MANILA.south,
        METRO_MANILA.east - METRO_MANILA.west,
    );
    let pgbench =
        format!(
        "-- Generated by `loadtest compare`: the KNN statement on uniform points of the city.\n\
         -- pgbench -n -M prepared -c 8 -j 2 -T 8 -f knn.pgbench DATABASE_URL\n\
         \\set lat {south} + random(0, 1000000) * {dlat}\n\
         \\set lng {west} + random(0, 1000000) * {dlng}\n{sql};\n",
        south = a.south,
        west = a.west,
        dlat = span_lat / 1e6,
        dlng = span_lng / 1e6,
        sql = KNN_SQL.replace("$1", ":lng").replace("$2", ":lat").replace('\n', " "),
    );
    std::fs::write(dir.join("knn.pgbench"), pgbench)?;
    let points: String = ctx
        .points
        .iter()
        .take(REDIS_BENCHMARK_POINTS)
        .map(|p| format!("{} {}\n", p.lng, p.lat))
        .collect();
    std::fs::write(dir.join("redis-points.txt"), points)?;
    Ok(())
}

/// Query points redis-benchmark asks about (it cannot vary arguments per request).
const REDIS_BENCHMARK_POINTS: usize = 5;

/// Writes a file only its owner may read (it holds a bearer token).
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// criterion's mean for one query (`mean.point_estimate`, ns), in µs.
fn criterion_mean_us(path: &std::path::Path) -> Option<f64> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!(
                "no in-process figure: cannot read {}: {error}",
                path.display()
            );
            return None;
        }
    };
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let ns = value.pointer("/mean/point_estimate")?.as_f64()?;
    Some(round(ns / 1000.0, 3))
}

// ---------------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------------

/// When the sockets stop recording, stop sending, and give up waiting.
struct IngestClock {
    warm_end: Instant,
    end: Instant,
    drain_until: Instant,
    window: usize,
    /// Stored acks per second of the measured window.
    per_second: Vec<AtomicU64>,
}

#[derive(Default)]
struct SocketTally {
    histogram: Option<Histogram<u64>>,
    /// Every ack, warm-up and drain included (for CPU per ping).
    acked_all: u64,
    stored: u64,
    not_stored: u64,
    sent: u64,
    errors: BTreeMap<String, u64>,
}

impl SocketTally {
    fn merge(&mut self, other: SocketTally) {
        match (&mut self.histogram, other.histogram) {
            (Some(mine), Some(theirs)) => mine.add(&theirs).expect("equal bounds"),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        self.acked_all += other.acked_all;
        self.stored += other.stored;
        self.not_stored += other.not_stored;
        self.sent += other.sent;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }
}

/// What the server sends a therapist, as far as ingest cares.
#[derive(Deserialize)]
struct ServerFrame {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<i64>,
    stored: Option<bool>,
    code: Option<String>,
}

/// Opens a therapist socket and goes online.
async fn open_therapist(server: &Server, token: &str) -> anyhow::Result<Socket> {
    let mut socket = server
        .socket("therapist", token)
        .await
        .map_err(|e| anyhow::anyhow!("opening a therapist socket: {e}"))?;
    client::send_json(
        &mut socket,
        &serde_json::json!({"type": "availability", "online": true}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("going online: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, client::next_frame(&mut socket)).await {
            Err(_) => bail!("no answer to going online within 15 s"),
            Ok(Incoming::Frame(frame)) => match client::kind(&frame) {
                "availability" => return Ok(socket),
                "error" => bail!("going online refused: {frame}"),
                _ => {}
            },
            Ok(Incoming::Closed) => bail!("the socket closed while going online"),
            Ok(Incoming::Ignored) => {}
        }
    }
}

async fn hilot_ingest(
    server: &Server,
    city: &City,
    args: &CompareArgs,
) -> anyhow::Result<IngestReport> {
    let wanted = args.ingest_sockets.min(city.therapists.len());
    let rss_mib_before = rss_mib(server).await;
    let permits = Arc::new(tokio::sync::Semaphore::new(OPEN_PARALLELISM));
    let mut opening = JoinSet::new();
    for therapist in &city.therapists[..wanted] {
        let server = server.clone();
        let token = therapist.token.clone();
        let base = therapist.base();
        let permits = Arc::clone(&permits);
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            open_therapist(&server, &token).await.map(|s| (s, base))
        });
    }
    let mut sockets = Vec::with_capacity(wanted);
    let mut failures = 0;
    while let Some(joined) = opening.join_next().await {
        match joined.context("opening a socket panicked")? {
            Ok(socket) => sockets.push(socket),
            Err(error) => {
                if failures == 0 {
                    eprintln!("  {error:#}");
                }
                failures += 1;
            }
        }
    }
    if failures > 0 {
        eprintln!("  {failures} of {wanted} sockets failed to open");
    }
    anyhow::ensure!(!sockets.is_empty(), "no therapist socket opened");

    let measured = Duration::from_secs(args.ingest_seconds.max(1));
    let warm_end = Instant::now() + INGEST_WARMUP;
    let clock = Arc::new(IngestClock {
        warm_end,
        end: warm_end + measured,
        drain_until: warm_end + measured + INGEST_DRAIN,
        window: args.ingest_window.max(1),
        per_second: (0..measured.as_secs()).map(|_| AtomicU64::new(0)).collect(),
    });
    let opened = sockets.len();
    let cpu_before = server_cpu_s(server).await;
    let mut streaming = JoinSet::new();
    for (socket, base) in sockets {
        streaming.spawn(stream_pings(socket, base, Arc::clone(&clock)));
    }
    tokio::time::sleep_until(clock.end.into()).await;
    let rss_mib_after = rss_mib(server).await;
    let mut total = SocketTally::default();
    while let Some(joined) = streaming.join_next().await {
        total.merge(joined.context("a socket task panicked")?);
    }
    let cpu_after = server_cpu_s(server).await;
    let histogram = total.histogram.unwrap_or_else(new_histogram);
    let acks = total.stored + total.not_stored;
    let server_cpu_us_per_ping = cpu_before
        .zip(cpu_after)
        .filter(|_| total.acked_all > 0)
        .map(|(before, after)| round((after - before) * 1e6 / total.acked_all as f64, 1));
    let report = IngestReport {
        hilot_rows_per_s: round(total.stored as f64 / measured.as_secs_f64(), 0),
        ack_p50_ms: quantile_ms(&histogram, 0.5),
        ack_p99_ms: quantile_ms(&histogram, 0.99),
        ack_max_ms: if histogram.is_empty() {
            0.0
        } else {
            round(histogram.max() as f64 / 1000.0, 3)
        },
        stored_fraction: if acks == 0 {
            0.0
        } else {
            round(total.stored as f64 / acks as f64, 4)
        },
        rss_mib_before,
        rss_mib_after,
        sockets: opened,
        window: clock.window,
        measured_s: measured.as_secs_f64(),
        hilot_rows: total.stored,
        hilot_per_second: clock
            .per_second
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect(),
        errors: total.errors,
        server_cpu_us_per_ping,
        ..IngestReport::default()
    };
    eprintln!(
        "  {} pings sent, {} stored in the window ({:.0}/s), stored fraction {}, ack p50 {} ms p99 {} ms",
        total.sent, report.hilot_rows, report.hilot_rows_per_s, report.stored_fraction,
        report.ack_p50_ms, report.ack_p99_ms
    );
    if !report.errors.is_empty() {
        eprintln!("  errors: {:?}", report.errors);
    }
    Ok(report)
}

/// One therapist streaming fixes with `window` unacknowledged at a time, stepping 3 m north and
/// back so every fix moves it and none implies an implausible speed.
async fn stream_pings(socket: Socket, base: Point, clock: Arc<IngestClock>) -> SocketTally {
    let (mut sink, mut stream) = socket.split();
    let mut tally = SocketTally {
        histogram: Some(new_histogram()),
        ..SocketTally::default()
    };
    let north = Point::new(base.lat + PING_STEP_M / 111_320.0, base.lng);
    let mut in_flight: VecDeque<(i64, Instant)> = VecDeque::with_capacity(clock.window);
    let mut seq: i64 = 0;
    let mut last_ms: i64 = 0;
    let mut text = String::with_capacity(192);
    'run: loop {
        let now = Instant::now();
        while in_flight
            .front()
            .is_some_and(|(_, sent)| now.duration_since(*sent) > ACK_LOST_AFTER)
        {
            in_flight.pop_front();
            tally.error("lost");
        }
        if now < clock.end {
            if in_flight.len() < clock.window {
                while in_flight.len() < clock.window {
                    seq += 1;
                    // recorded_at strictly increases, like seq.
                    let ms = Utc::now().timestamp_millis().max(last_ms + 1);
                    last_ms = ms;
                    let at = chrono::DateTime::from_timestamp_millis(ms)
                        .expect("a current timestamp")
                        .to_rfc3339_opts(SecondsFormat::Millis, true);
                    let p = if seq % 2 == 0 { base } else { north };
                    text.clear();
                    let _ = write!(
                        text,
                        r#"{{"type":"location","seq":{seq},"lat":{:.7},"lng":{:.7},"accuracy_m":8,"recorded_at":"{at}"}}"#,
                        p.lat, p.lng
                    );
                    if sink.feed(Message::text(text.as_str())).await.is_err() {
                        tally.error("socket_closed");
                        break 'run;
                    }
                    in_flight.push_back((seq, Instant::now()));
                    tally.sent += 1;
                }
                if sink.flush().await.is_err() {
                    tally.error("socket_closed");
                    break 'run;
                }
            }
        } else if in_flight.is_empty() || now >= clock.drain_until {
            break;
        }
        let wait_until = if now < clock.end {
            clock.end
        } else {
            clock.drain_until
        };
        let first = match tokio::time::timeout_at(wait_until.into(), stream.next()).await {
            Err(_) => continue,
            Ok(message) => message,
        };
        let mut message = first;
        // Handle everything already received before sending again (fewer, larger writes).
        loop {
            match message {
                Some(Ok(Message::Text(frame))) => {
                    on_server_frame(frame.as_str(), &mut in_flight, &mut tally, &clock)
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    tally.error("socket_closed");
                    break 'run;
                }
                Some(Ok(_)) => {}
            }
            match stream.next().now_or_never() {
                Some(next) => message = next,
                None => break,
            }
        }
    }
    for _ in in_flight.drain(..) {
        tally.error("lost");
    }
    let _ = sink.send(Message::Close(None)).await;
    tally
}

fn on_server_frame(
    text: &str,
    in_flight: &mut VecDeque<(i64, Instant)>,
    tally: &mut SocketTally,
    clock: &IngestClock,
) {
    let Ok(frame) = serde_json::from_str::<ServerFrame>(text) else {
        tally.error("unreadable_frame");
        return;
    };
    let sent = frame.seq.and_then(|seq| {
        let i = in_flight.iter().position(|(s, _)| *s == seq)?;
        in_flight.remove(i).map(|(_, sent)| sent)
    });
    match frame.kind.as_str() {
        "ack" => {
            let Some(sent) = sent else {
                return; // a duplicate ack
            };
            tally.acked_all += 1;
            let now = Instant::now();
            if now < clock.warm_end || now >= clock.end {
                return;
            }
            let us = now.duration_since(sent).as_micros() as u64;
            if let Some(h) = &mut tally.histogram {
                h.saturating_record(us.max(1));
            }
            if frame.stored == Some(true) {
                tally.stored += 1;
                let second = now.duration_since(clock.warm_end).as_secs() as usize;
                if let Some(counter) = clock.per_second.get(second) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                tally.not_stored += 1;
            }
        }
        "error" => tally.error(frame.code.as_deref().unwrap_or("error")),
        _ => {}
    }
}

/// COPYs `rows` fixes of the first `therapists` therapists into provider_locations, in chunks
/// of 10,000 on one connection; rows copied and seconds taken. The CSV is built beforehand,
/// so this times the database alone.
async fn copy_ingest(
    pool: &PgPool,
    city: &City,
    therapists: usize,
    rows: usize,
) -> anyhow::Result<(u64, f64)> {
    let uuids: Vec<Uuid> = city.therapists[..therapists.min(city.therapists.len())]
        .iter()
        .map(|t| t.provider_id)
        .collect();
    let providers: Vec<(i64, f64, f64)> = sqlx::query_as(
        "SELECT p.id, tp.base_location_latitude::float8, tp.base_location_longitude::float8 \
         FROM providers p JOIN therapist_profiles tp ON tp.provider_id = p.id \
         WHERE p.uuid = ANY($1) ORDER BY p.id",
    )
    .bind(&uuids)
    .fetch_all(pool)
    .await
    .context("reading the ingest therapists")?;
    anyhow::ensure!(
        !providers.is_empty(),
        "the ingest therapists are not in the database"
    );
    let mut chunks = Vec::new();
    let mut row = 0;
    while row < rows {
        let n = COPY_CHUNK_ROWS.min(rows - row);
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut csv = String::with_capacity(n * 64);
        for i in row..row + n {
            let (id, lat, lng) = providers[i % providers.len()];
            let lat = if (i / providers.len()) % 2 == 1 {
                lat + PING_STEP_M / 111_320.0
            } else {
                lat
            };
            let _ = writeln!(csv, "{id},{lat:.8},{lng:.8},8,{now}");
        }
        chunks.push(csv);
        row += n;
    }
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copied = 0;
    for csv in &chunks {
        let mut copy = conn.copy_in_raw(COPY_SQL).await.context("COPY")?;
        copy.send(csv.as_bytes()).await.context("COPY data")?;
        copied += copy.finish().await.context("finishing COPY")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "  {copied} rows in {seconds:.2} s ({:.0}/s)",
        copied as f64 / seconds
    );
    Ok((copied, seconds))
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn print_report(report: &Report) {
    println!();
    println!(
        "nearby: {} therapists over Metro Manila, radius {} m, k = {}, {} s per run ({} HTTP client)",
        report.therapists, report.radius_m, report.k, report.seconds, report.http_client
    );
    println!(
        "{:<22} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "contender",
        "conc",
        "queries/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "hilot÷",
        "errors"
    );
    for r in &report.nearby {
        let ratio = report
            .ratios
            .iter()
            .find(|x| x.anchor == r.contender && x.concurrency == r.concurrency)
            .map(|x| format!("{:.2}", x.hilot_over_anchor))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<22} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>7}",
            r.contender,
            r.concurrency,
            r.qps,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            ratio,
            r.errors
        );
    }
    match report.in_process_us {
        Some(us) => println!("in-process index query (criterion mean): {us:.2} µs"),
        None => println!("in-process index query: not given"),
    }
    let a = &report.agreement;
    println!(
        "agreement over {} points: hilot = postgis {}, hilot = redis {}, postgis 6.1 = knn {}; knn uses GiST: {}",
        a.points, a.hilot_eq_postgis, a.hilot_eq_redis, a.postgis_seed_eq_knn, report.knn_plan_uses_gist_index
    );
    let i = &report.ingest;
    let mib = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.1}"));
    println!();
    println!(
        "ingest: {} sockets, window {}, {} s measured",
        i.sockets, i.window, i.measured_s
    );
    println!(
        "  hilot {:.0} rows/s, COPY {:.0} rows/s, hilot÷COPY {:.3}",
        i.hilot_rows_per_s, i.copy_rows_per_s, i.ratio
    );
    println!(
        "  ack p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; stored fraction {:.4}; server RSS {} → {} MiB",
        i.ack_p50_ms,
        i.ack_p99_ms,
        i.ack_max_ms,
        i.stored_fraction,
        mib(i.rss_mib_before),
        mib(i.rss_mib_after)
    );
    if !i.errors.is_empty() {
        println!("  errors: {:?}", i.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_http_urls() {
        assert_eq!(
            split_http_url("http://127.0.0.1:18181").unwrap(),
            ("127.0.0.1:18181".to_owned(), String::new())
        );
        assert_eq!(
            split_http_url("http://localhost/api/").unwrap(),
            ("localhost:80".to_owned(), "/api".to_owned())
        );
        assert!(split_http_url("https://example.com").is_err());
    }

    #[test]
    fn parses_response_heads() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/json\r\n\r\nhello";
        assert_eq!(
            parse_head(head).unwrap(),
            Some((200, head.len() - 5, 5, false))
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn query_points_are_fixed_and_inside_the_city() {
        let a = query_points();
        assert_eq!(a, query_points());
        assert_eq!(a.len(), QUERY_POINTS);
        assert!(a.iter().all(|p| p.lat >= METRO_MANILA.south
            && p.lat <= METRO_MANILA.north
            && p.lng >= METRO_MANILA.west
            && p.lng <= METRO_MANILA.east));
    }
}
