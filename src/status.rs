//! `streamshield status`: a live table of the cluster from the coordinator. The coordinator is the one given
//! (`--api`, `--api-token-file`), or the local run's.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::coordinator::client::Client;
use crate::local::cli::DirArg;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The coordinator API (default: the local run's).
    #[arg(long)]
    pub api: Option<String>,
    /// The API's bearer token file (default: the local run's).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Print the coordinator's /v1/cluster JSON.
    #[arg(long)]
    pub json: bool,
    /// Refresh every N seconds until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,
}

impl StatusArgs {
    /// The client of the coordinator these arguments name.
    pub fn client(&self) -> Result<Client, String> {
        let (api, token_file) = match (&self.api, &self.api_token_file) {
            (Some(api), Some(t)) => (api.clone(), t.clone()),
            (api, token) => {
                let state =
                    crate::local::RunState::load(&self.dir.dir).map_err(|e| e.to_string())?;
                let Some(c) = state.as_ref().and_then(|s| s.coordinator.clone()) else {
                    return Err(format!(
                        "no coordinator known: pass --api and --api-token-file, or run `streamshield local up --profile shield` (looked in {})",
                        self.dir.dir.display()
                    ));
                };
                (
                    api.clone().unwrap_or(c.api),
                    token.clone().unwrap_or(c.api_token_file),
                )
            }
        };
        Client::with_token_file(&api, &token_file).map_err(|e| e.to_string())
    }
}
