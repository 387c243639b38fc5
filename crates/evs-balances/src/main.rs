//! Both Lambda functions of the balances stack, one bootstrap
//! (`evs_projection_lambda`): the live driver on the events table's stream
//! and the reconciler of its on-failure queue.
//!
//! Environment: `EVS_BALANCES_TABLE` (the read model's table, per-stream
//! layout) and `EVS_EVENTS_TABLE` (the events table, read to fill a stream's
//! holes and to catch streams up).

use evs_balances::{Balances, NAMESPACE};
use evs_projection::DynamoLayout;
use evs_projection_lambda::{env, Function};

fn main() -> Result<(), lambda_runtime::Error> {
    evs_projection_lambda::main(Function {
        projection: Balances,
        table: env("EVS_BALANCES_TABLE")?,
        layout: DynamoLayout::PerStream,
        events_table: env("EVS_EVENTS_TABLE")?,
        namespace: NAMESPACE,
        rebuild: "rebuild the balances from the archive (evs_projection::replay::rebuild; it skips every event already applied)",
    })
}
