//! One module per subcommand.

mod append;
mod invoke;
mod read;
mod table;

use anyhow::{Context, Result};
use evs_core::DynamoStore;

use crate::flags::{Cli, Command, TableCommand};

/// Runs the subcommand `cli` names.
pub async fn run(cli: Cli) -> Result<()> {
    let table = cli.table.clone();
    let store = || async {
        let table = table.context("no table given: pass --table NAME or set EVS_TABLE")?;
        Ok::<_, anyhow::Error>(DynamoStore::new(crate::aws::dynamodb().await?, table))
    };
    match cli.command {
        Command::Table(TableCommand::Create) => table::create(&store().await?).await,
        Command::Append(args) => append::run(&store().await?, args).await,
        Command::Read(args) => read::run(&store().await?, args).await,
        Command::Invoke(args) => invoke::run(args).await,
    }
}

/// True when the error is stdout closing early (`evs read … | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
