//! `vision-ctl`: the command-line client for people. All the work is in the
//! library ([`vision_ctl::run`]); this only routes output and sets the exit code
//! (0 success, 1 failure, 2 usage error).
#![allow(
    clippy::print_stdout,
    reason = "a CLI's job is printing; the library writes to a given writer"
)]

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = vision_ctl::run(std::env::args_os(), &mut out);
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                vision_ctl::CtlError::Usage(m) if m.starts_with("error:") => eprintln!("{m}"),
                _ => eprintln!("error: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}
