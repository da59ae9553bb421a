//! `engagement import clients|orders FILE`: streams a CSV file through the ingest engine,
//! with progress on a terminal, every skipped row reported with its line, and a summary.
//!
//! The import runs the views' consumers itself, so when it ends the users view shows every
//! row (and the time it reports includes that); a server running beside it shares the work.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use projections::commands::{CommandBus, CommandMetadata};
use projections::ingest::files::{self, BytesRead};
use projections::ingest::regroup::{self, Partitions};
use projections::ingest::{self, Ingest, Rejected, Report, StreamSettings};
use projections::log::consumer::{ConsumerSettings, LogSignal};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ImportConfig, ImportKind};

/// The exit code when some rows were skipped (and the rest went in).
pub const ROWS_SKIPPED_EXIT_CODE: u8 = 3;

/// Some rows were skipped; the others went in.
#[derive(Debug, thiserror::Error)]
#[error("{0} row(s) were skipped (see above); the others went in")]
pub struct RowsSkipped(pub u64);

/// How long the import waits for the users view after its last write.
const CATCH_UP: Duration = Duration::from_secs(600);

/// Counters the workers bump and the progress display reads.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

impl Tally {
    fn rows(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
            + self.duplicates.load(Ordering::Relaxed)
            + self.rejected.load(Ordering::Relaxed)
    }
}

/// Runs one import.
///
/// # Errors
/// The file cannot be read, the database failed, or (as [`RowsSkipped`]) some rows were bad.
pub async fn run(
    pool: PgPool,
    vault: Arc<projections::vault::Vault>,
    config: ImportConfig,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let clock: Arc<dyn projections::clock::Clock> = match config.at {
        Some(at) => Arc::new(projections::clock::ManualClock::new(at)),
        None => Arc::new(projections::clock::SystemClock),
    };
    let services = config
        .scoring
        .client_services(projections::db::holdout_salt(&pool).await?);
    let signal = LogSignal::announcing(pool.clone());
    let bus = CommandBus::announcing(pool.clone(), vault.clone(), services, clock, signal.clone());
    let what = match config.kind {
        ImportKind::Clients => "clients",
        ImportKind::Orders => "orders",
    };
    let ingest = Ingest::new(
        &bus,
        pool.clone(),
        CommandMetadata::for_actor(format!("import:{what}")),
        !config.live,
    );
    let stop = CancellationToken::new();
    let mut consumers = JoinSet::new();
    let models = projections::runtime::start(
        &pool,
        &vault,
        &ConsumerSettings::default(),
        &signal,
        &mut consumers,
        &stop,
    );

    let (input, size): (Box<dyn std::io::Read + Send>, Option<u64>) = if config.file == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&config.file)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", config.file))?;
        let size = file.metadata().ok().map(|m| m.len());
        (
            Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
            size,
        )
    };
    let bytes = BytesRead::default();
    let tally = Arc::new(Tally::default());
    let bar = progress_bar(size);
    let settings = StreamSettings {
        workers: usize::from(config.workers),
        chunk: config.chunk_rows as usize,
    };
    let shown = {
        let tally = tally.clone();
        let bar = bar.clone();
        move |report: &Report| {
            tally.accepted.fetch_add(report.accepted, Ordering::Relaxed);
            tally
                .duplicates
                .fetch_add(report.duplicates, Ordering::Relaxed);
            tally
                .rejected
                .fetch_add(report.rejected.len() as u64, Ordering::Relaxed);
            for rejected in &report.rejected {
                bar.suspend(|| eprintln!("{}", describe(rejected)));
            }
        }
    };
    // Orders are read twice (see `ingest::regroup`): the bar follows the bytes read in the
    // first pass, then the rows recorded out of all the rows.
    let regrouping = Arc::new(AtomicU64::new(0));
    let ticker = spawn_ticker(
        bar.clone(),
        bytes.clone(),
        tally.clone(),
        regrouping.clone(),
        started,
    );
    let result = match config.kind {
        ImportKind::Orders => {
            let (tx, rx) = mpsc::channel(1_024);
            let reader = {
                let bytes = bytes.clone();
                let regrouping = regrouping.clone();
                tokio::task::spawn_blocking(move || {
                    read_and_regroup(input, size, &tx, &bytes, &regrouping)
                })
            };
            let ingest = ingest.clone();
            let streamed = ingest::stream(
                rx,
                settings,
                move |rows| {
                    let ingest = ingest.clone();
                    async move { ingest.orders(rows).await }
                },
                shown,
            )
            .await;
            finish(reader.await?, streamed)
        }
        ImportKind::Clients => {
            let (tx, rx) = mpsc::channel(1_024);
            let reader = {
                let bytes = bytes.clone();
                tokio::task::spawn_blocking(move || files::read_clients(input, &tx, &bytes))
            };
            let ingest = ingest.clone();
            let streamed = ingest::stream(
                rx,
                settings,
                move |rows| {
                    let ingest = ingest.clone();
                    async move { ingest.clients(rows).await }
                },
                shown,
            )
            .await;
            finish(reader.await?, streamed)
        }
    };
    ticker.abort();
    let total = match result {
        Ok(total) => total,
        Err(error) => {
            bar.abandon();
            stop.cancel();
            return Err(error);
        }
    };
    bar.set_message("waiting for the users view");
    if let Some(position) = total.position {
        models
            .users
            .wait_for(position, CATCH_UP)
            .await
            .map_err(|e| anyhow::anyhow!("the users view did not catch up: {e}"))?;
    }
    bar.finish_and_clear();
    stop.cancel();
    while consumers.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let rows = tally.rows();
    let rejected = tally.rejected.load(Ordering::Relaxed);
    println!(
        "imported {what} from {}: {rows} rows in {elapsed:.1}s ({:.0} rows/s): {} recorded, {} already there, {rejected} skipped",
        config.file,
        rows as f64 / elapsed.max(1e-9),
        tally.accepted.load(Ordering::Relaxed),
        tally.duplicates.load(Ordering::Relaxed),
    );
    if rejected > 0 {
        return Err(RowsSkipped(rejected).into());
    }
    Ok(())
}

/// Reads an order file into partitions by client, then hands the rows on grouped by client
/// (`ingest::regroup`); `rows_in_file` says how many there are once the first pass is done.
fn read_and_regroup(
    input: Box<dyn std::io::Read + Send>,
    size: Option<u64>,
    rows: &mpsc::Sender<Result<projections::ingest::OrderRecord, Rejected>>,
    bytes: &BytesRead,
    rows_in_file: &AtomicU64,
) -> Result<u64, files::FileError> {
    let spill = |e: std::io::Error| files::FileError::Spill(e);
    let mut partitions = Partitions::new(regroup::partitions_for(size)).map_err(spill)?;
    let mut failed = None;
    let mut rejected = 0;
    let read = files::read_orders_into(input, bytes, |row| match row {
        Ok(row) => match partitions.push(&row) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
        Err(rejection) => {
            rejected += 1;
            rows.blocking_send(Err(rejection)).is_ok()
        }
    })?;
    if let Some(e) = failed {
        return Err(spill(e));
    }
    rows_in_file.store(partitions.rows() + rejected, Ordering::Relaxed);
    partitions.drain(rows).map_err(spill)?;
    Ok(read)
}

/// The reader's and the writers' outcomes as one.
fn finish(
    read: Result<u64, files::FileError>,
    streamed: Result<Report, projections::commands::CommandError>,
) -> anyhow::Result<Report> {
    // A file that stopped being readable is the cause; the writers only ran out of rows.
    read?;
    Ok(streamed?)
}

/// `line 7: placed_at: not a date: "yesterday"`.
fn describe(rejected: &Rejected) -> String {
    match &rejected.field {
        Some(field) => format!("line {}: {field}: {}", rejected.line, rejected.message),
        None => format!("line {}: {}", rejected.line, rejected.message),
    }
}

fn progress_bar(size: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr_with_hz(4);
    match size {
        Some(size) => ProgressBar::with_draw_target(Some(size), target).with_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} (ETA {eta})")
                .expect("a valid template"),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{spinner} {bytes} {msg}").expect("a valid template"),
        ),
    }
}

/// Updates the bar a few times a second; without a terminal, prints a line every 10 s.
fn spawn_ticker(
    bar: ProgressBar,
    bytes: BytesRead,
    tally: Arc<Tally>,
    rows_in_file: Arc<AtomicU64>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut last_line = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let rows = tally.rows();
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let message = format!(
                "{rows} rows, {rate:.0} rows/s, {} skipped",
                tally.rejected.load(Ordering::Relaxed)
            );
            match rows_in_file.load(Ordering::Relaxed) {
                0 => bar.set_position(bytes.load(Ordering::Relaxed)),
                total => {
                    if bar.length() != Some(total) {
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{bar:30} {pos}/{len} rows {msg} (ETA {eta})",
                            )
                            .expect("a valid template"),
                        );
                        bar.set_length(total);
                        bar.reset_eta();
                    }
                    bar.set_position(rows);
                }
            }
            if terminal {
                bar.set_message(message);
            } else if last_line.elapsed() >= Duration::from_secs(10) {
                last_line = Instant::now();
                eprintln!("import: {message}");
            }
        }
    })
}
