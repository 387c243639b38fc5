//! `evs pump`: runs the `evs-pump` binary, beside `evs` or on the PATH, with
//! the same arguments (it replaces this process, so signals and the exit
//! code are the pump's own). A binary of its own so that `evs` compiles no
//! DynamoDB Streams SDK.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

pub(super) fn run(table: Option<String>, log: &str, args: Vec<OsString>) -> Result<()> {
    let name = format!("evs-pump{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(&name))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(&name));
    let mut command = Command::new(&program);
    command.args(args).env("EVS_LOG", log);
    if let Some(table) = table {
        command.env("EVS_TABLE", table);
    }
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
        let err = command.exec();
        Err(err).with_context(missing)
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(missing)?;
        std::process::exit(status.code().unwrap_or(1))
    }
}
