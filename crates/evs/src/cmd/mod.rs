//! One module per subcommand.

mod append;
mod invoke;
mod location;
mod output;
mod progress;
mod pump;
mod read;
mod replay;
mod table;
mod verify;

use anyhow::Result;
use evs_dynamodb::DynamoStore;

use crate::flags::{Cli, Command, TableCommand};

/// Runs the subcommand `cli` names.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let table = cli.table.clone();
    let store = || async {
        let table = table_name(table)?;
        Ok::<_, anyhow::Error>(DynamoStore::new(crate::aws::dynamodb().await?, table))
    };
    match cli.command {
        Command::Table(TableCommand::Create) => table::create(&store().await?).await,
        Command::Append(args) => append::run(&store().await?, args).await,
        Command::Read(args) => read::run(&store().await?, args).await,
        Command::Invoke(args) => invoke::run(args).await,
        Command::Pump(args) => pump::run(cli.table.clone(), args).await,
        Command::Replay(args) => replay::run(cli.table.as_deref(), args).await,
        Command::Verify(args) => verify::run(cli.table.as_deref(), args).await,
    }
}

/// The archive or replay is incomplete: exit code 4 (the report was printed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Incomplete(pub String);

/// The command line asks for something impossible (a missing table, an
/// archive URL that cannot be right): exit code 2, as clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub String);

/// The table `--table`/`EVS_TABLE` names, or a usage error.
pub(crate) fn table_name(table: Option<String>) -> Result<String> {
    match table {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(Usage("no table given: pass --table NAME or set EVS_TABLE".into()).into()),
    }
}

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

/// Resolves on Ctrl-C or (on Unix) SIGTERM, as a container stop sends it.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// True when the error is stdout closing early (`evs read … | head`).
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
