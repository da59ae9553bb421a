//! `engagement`: the client engagement engine. See the crate docs of `api` for the layout.

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

/// A GraphQL response is hundreds of small allocations (values, strings, JSON); under load
/// glibc's malloc took about a third of the server's CPU. mimalloc's per-thread free lists
/// make those cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = api::config::Cli::parse();
    match api::cli::run(cli).await {
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
