//! The `xboot` binary: see [`xboot::cli`].
use std::process::ExitCode;

fn main() -> ExitCode {
    match xboot::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
