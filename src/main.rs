//! `flowguard` binary entry point: parse the CLI and hand off to [`flowguard::cli`].
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

fn main() -> std::process::ExitCode {
    flowguard::cli::main()
}
