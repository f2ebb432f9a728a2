//! `loadtest`: drives Hilot's simulator hard against a running server and reports latency
//! percentiles (`run`), and compares nearby search and ping ingest side by side with Redis
//! GEOSEARCH and PostGIS on identical data (`compare`). `report` renders the README's
//! Performance section from the JSON both write.

mod compare;
mod machine;
mod overload;
mod readme;
mod scenario;
mod storm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    about = "Load tests and benchmarks for a Hilot server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulated therapists, customers and dashboards against a running server: ramp up, hold,
    /// stop; HDR percentiles, errors by kind and server RSS, on screen and as JSON.
    Run(scenario::RunArgs),
    /// Nearby search and ping ingest: Hilot against Redis GEOSEARCH and PostGIS, same data.
    Compare(compare::CompareArgs),
    /// Concurrent registrations, then concurrent logins, while a client reads: server RSS and
    /// the authenticated read's latency.
    Storm(storm::StormArgs),
    /// Twice the load the server can take: admitted requests' latency, refusals, errors.
    Overload(overload::OverloadArgs),
    /// Rewrites the README's Performance section from the benchmark JSON.
    Report(readme::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => scenario::run(args).await.map(|_| ()),
            Command::Compare(args) => compare::run(args).await,
            Command::Storm(args) => storm::run(args).await.map(|_| ()),
            Command::Overload(args) => overload::run(args).await.map(|_| ()),
            Command::Report(args) => readme::run(args),
        }
    })
}
