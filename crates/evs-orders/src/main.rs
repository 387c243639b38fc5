//! `evs-orders`: the orders example's one binary. Under Lambda (when
//! `AWS_LAMBDA_RUNTIME_API` is set) it is both functions of its stack: the
//! live driver on the events table's stream and the reconciler on the
//! on-failure queue ([`lambda`]); elsewhere it is the operator's command
//! line ([`cli`]): `init`, `rebuild`, `dump`, `parked`, `resume`.

use std::process::ExitCode;

mod cli;
mod lambda;

// A rebuild allocates an event, its rows' keys and its payload per line:
// mimalloc, as the archiver's Lambda.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda::main();
    }
    cli::main()
}
