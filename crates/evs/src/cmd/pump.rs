//! `evs pump`: runs the `evs-pump` binary, beside `evs` or on the PATH, with
//! the same arguments (it replaces this process, so signals and the exit
//! code are the pump's own). A binary of its own so that `evs` compiles no
//! DynamoDB Streams SDK. It runs as `evs pump` (its argv[0]), so its help
//! and errors name it so; the global flags given to `evs` (`--log`, the
//! timeouts) reach it as the environment variables it reads, and only
//! those given: a default of `evs`'s is not passed on as if the
//! environment had said it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

pub(super) fn run(given: Vec<(&'static str, OsString)>, args: Vec<OsString>) -> Result<()> {
    let name = format!("evs-pump{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(&name))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(&name));
    let mut command = Command::new(&program);
    command.args(args).envs(given);
    let missing = || {
        format!(
            "`evs pump` runs the {name} binary, which is neither beside evs nor on the PATH: \
             install it with `cargo install --path crates/evs-pump-cli`"
        )
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Returns only if the program could not be run.
        let err = command.arg0("evs pump").exec();
        Err(err).with_context(missing)
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(missing)?;
        std::process::exit(status.code().unwrap_or(1))
    }
}
