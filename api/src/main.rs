//! `engagement`: the client engagement engine. See the crate docs of `api` for the layout.

use clap::Parser as _;

/// A GraphQL response is hundreds of small allocations (values, strings, JSON); under load
/// glibc's malloc took about a third of the server's CPU. mimalloc's per-thread free lists
/// make those cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Settings first (clap answers --help and bad flags itself), then logging as they say.
    let cli = api::config::Cli::parse();
    let telemetry = match api::telemetry::init(cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = api::cli::run(cli).await;
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<api::import::RowsSkipped>().is_some() => {
            eprintln!("{error}");
            std::process::ExitCode::from(api::import::ROWS_SKIPPED_EXIT_CODE)
        }
        Err(error) => {
            // One line, with the cause chain: what failed and why.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
