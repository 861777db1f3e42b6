//! One module per command: each owns its flags (clap `Args`), its flow (one call into one
//! capability crate) and its rendering. Adding a command adds a file here and a variant to
//! `cli::Command`.

pub mod backup;
pub mod demo;
pub mod doctor;
pub mod ha;
pub mod partition;
pub mod pool;
pub mod replica;
pub mod tune;

use tracing::Instrument;

use crate::cli::Command;
use crate::exit::{Failure, Outcome};

/// Runs `command` inside a `command` span (its name), the root of everything it logs.
pub async fn run(command: Command) -> Result<Outcome, Failure> {
    let span = tracing::info_span!("command", name = command.name());
    async move {
        tracing::debug!("start");
        let result = match command {
            Command::Backup(c) => backup::run(c).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Doctor(a) => doctor::run(a).await,
            Command::Ha(c) => ha::run(c).await,
            Command::Partition(c) => partition::run(c).await,
            Command::Pool(a) => pool::run(a).await,
            Command::Replica(c) => replica::run(c).await,
            Command::Tune(c) => tune::run(c).await,
            Command::Wal(c) => backup::run_wal(c).await,
        };
        match &result {
            Ok(outcome) => tracing::debug!(?outcome, "done"),
            Err(f) => tracing::debug!(class = ?f.class(), error = %f.line(), "failed"),
        }
        result
    }
    .instrument(span)
    .await
}
