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
    // Settings first (clap answers --help and bad flags itself), then logging as they say.
    let cli = api::config::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // One JSON object per line, for log shippers.
        api::config::LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour only on a terminal: a file or a pipe gets plain text.
        api::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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
