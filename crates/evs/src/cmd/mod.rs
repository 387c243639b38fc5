//! One module per subcommand.

mod append;
mod backfill;
mod invoke;
mod location;
mod progress;
mod pump;
mod read;
mod replay;
mod table;
mod verify;

use std::ffi::OsString;

use anyhow::Result;
use evs_dynamodb::DynamoStore;

pub(crate) use evs_cli::{shutdown_signal, table_name, Usage};

use crate::flags::{Cli, Command, TableArg, TableCommand};

/// Runs the subcommand `cli` names; `given` are the global flags given on
/// the command line, as environment variables for `evs pump`.
pub(crate) async fn run(cli: Cli, given: Vec<(&'static str, OsString)>) -> Result<()> {
    let store = |table: TableArg| async {
        let table = table_name(table.table)?;
        Ok::<_, anyhow::Error>(DynamoStore::new(evs_cli::aws::dynamodb().await?, table))
    };
    match cli.command {
        Command::Table(TableCommand::Create { table }) => table::create(&store(table).await?).await,
        Command::Table(TableCommand::CreateCheckpoints { checkpoint_table }) => {
            replay::create_checkpoint_table(&evs_cli::aws::dynamodb().await?, &checkpoint_table)
                .await
        }
        Command::Append { table, args } => append::run(&store(table).await?, args).await,
        Command::Read { table, args } => read::run(&store(table).await?, args).await,
        Command::Invoke(args) => invoke::run(args).await,
        Command::Pump { args } => pump::run(given, args),
        Command::Replay { table, args } => replay::run(table.table.as_deref(), args).await,
        Command::Backfill(args) => backfill::run(args).await,
        Command::Verify { table, args } => verify::run(table.table.as_deref(), args).await,
    }
}

/// The archive or replay is incomplete: exit code 4 (the report was printed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Incomplete(pub String);

/// The reader of stdout went away before the replay ended: exit code 1,
/// unlike `evs read … | head`, because the replay's checkpoint then covers
/// only what the reader took.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConsumerGone(pub String);

/// The command was interrupted (Ctrl-C) before it finished: exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted{0}")]
pub(crate) struct Interrupted(pub String);
