//! Both Lambda functions of the stack, one bootstrap (`evs_projection_lambda`):
//! the reconciler of the on-failure queue and the live driver on the events
//! table's stream. The configuration is read once, the stores built once;
//! one invocation at a time per process.
//!
//! Environment: `EVS_READ_MODEL` (`dynamodb:TABLE`) and `EVS_EVENTS_TABLE`
//! (read to fill a stream's holes and to catch streams up).

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use evs_orders::{Orders, ReadModel, NAMESPACE};
use evs_projection::DynamoLayout;
use evs_projection_lambda::{env, Function};

pub(crate) fn main() -> ExitCode {
    match function().and_then(evs_projection_lambda::main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evs-orders: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The functions' configuration, from the environment.
fn function() -> Result<Function<Orders>, lambda_runtime::Error> {
    let read_model: ReadModel = env("EVS_READ_MODEL")?.parse().context("EVS_READ_MODEL")?;
    let ReadModel::DynamoDb(table) = read_model else {
        return Err(anyhow!(
            "EVS_READ_MODEL must be dynamodb:TABLE under Lambda (a memory: read model is lost between invocations)"
        )
        .into());
    };
    Ok(Function {
        projection: Orders,
        table,
        layout: DynamoLayout::Rows,
        events_table: env("EVS_EVENTS_TABLE")?,
        namespace: NAMESPACE,
        rebuild: "run `evs-orders rebuild` (it skips every event already applied)",
    })
}
