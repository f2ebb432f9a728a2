//! `loadtest compare`: nearby search and ping ingest, Hilot against Redis GEOSEARCH and PostGIS.

#[derive(Debug, clap::Args)]
pub struct CompareArgs {}

pub async fn run(_args: CompareArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
