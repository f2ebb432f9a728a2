//! The `hilot` command line: serve, migrate, admin, partitions, demo.

use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::accounts::{self, AdminOutcome};
use crate::config::Settings;
use crate::startup::Application;
use crate::{db, partitions};

#[derive(Debug, Parser)]
#[command(
    name = "hilot",
    version,
    about = "Geospatial on-demand dispatch for home-service therapists"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP and WebSockets until SIGTERM.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage administrators.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Show, create ahead, or retire the monthly provider_locations partitions.
    Partitions {
        #[command(subcommand)]
        action: PartitionAction,
    },
    /// Seed a demo city around Makati and drive simulated therapists and customers against a
    /// running server (through its public API) until Ctrl-C.
    Demo(crate::simulator::demo::DemoOptions),
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create an admin account (or give an existing account the admin role).
    Create {
        #[arg(long)]
        phone: String,
        #[arg(long)]
        password: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PartitionAction {
    /// List partitions with their bounds and row counts.
    Status,
    /// Create this month's partition and those of the months ahead.
    Ensure,
    /// Drop partitions older than app_settings `location_retention_months`.
    Rotate,
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            db::connect_and_migrate(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin {
            action: AdminAction::Create { phone, password },
        } => {
            let pool = db::connect_and_migrate(&settings).await?;
            let (phone, outcome) = accounts::create_admin(&pool, &phone, &password).await?;
            match outcome {
                AdminOutcome::Created => println!("admin {phone} created"),
                AdminOutcome::Promoted => println!("existing user {phone} is now an admin"),
            }
            Ok(())
        }
        Command::Demo(options) => crate::simulator::demo::run(&settings, options).await,
        Command::Partitions { action } => {
            let pool = db::connect_and_migrate(&settings).await?;
            let today = Utc::now().date_naive();
            match action {
                PartitionAction::Status => {
                    for p in partitions::status(&pool).await? {
                        println!("{:<34} {:>10} rows  {}", p.name, p.rows, p.bounds);
                    }
                }
                PartitionAction::Ensure => {
                    let created =
                        partitions::ensure(&pool, today, settings.partitions_ahead).await?;
                    report("created", &created);
                }
                PartitionAction::Rotate => {
                    let retention = partitions::retention_months(&pool).await?;
                    let dropped = partitions::rotate(&pool, today, retention).await?;
                    report("dropped", &dropped);
                }
            }
            Ok(())
        }
    }
}

fn report(verb: &str, names: &[String]) {
    if names.is_empty() {
        println!("nothing {verb}");
    }
    for name in names {
        println!("{verb} {name}");
    }
}
