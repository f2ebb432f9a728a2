//! `loadtest report`: the README's Performance section, rendered from benchmark JSON.

#[derive(Debug, clap::Args)]
pub struct ReportArgs {}

pub fn run(_args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
