//! `hilot`: parse the command line, start logging, run the command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hilot::cli::Cli::parse();
    let logs = hilot::telemetry::init_logging();
    let outcome = hilot::cli::run(cli).await;
    drop(logs); // flushes the log lines still queued
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One clear line, the whole cause chain, no panic trace.
            eprintln!("hilot: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
