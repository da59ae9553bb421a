//! Regrouping an order file by client through temporary files, so that any layout imports as
//! fast as a file sorted by client.
//!
//! An export in date order touches every client once per few thousand rows: a chunk then holds
//! a thousand clients with one order each, and each becomes its own command, score and view
//! update, ten times the work of the same orders grouped. So the orders are read twice. Pass
//! one streams the file and appends each row to one of N partition files chosen by its
//! client's external id. Pass two reads the partitions one at a time, a window of rows at a
//! time, and hands on each client's rows together, in file order (so each client's orders are
//! recorded in the order the file gives them, as one-by-one placement would). Memory holds one
//! window, whatever the file's size; the partitions live in a temporary directory removed at
//! the end.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash as _, Hasher as _};
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};

use chrono::DateTime;
use domain::client::PlaceOrder;
use domain::values::{Categories, ExternalId, Money, OrderId};
use tokio::sync::mpsc;

use super::{OrderRecord, Rejected};

/// Rows held in memory at once in pass two.
const WINDOW_ROWS: usize = 30_000;

/// Partitions for an input of `bytes` (unknown: standard input): about 1 MB each (some 20,000
/// rows), so that a partition fits one window, up to 512 open files (a usual limit is 1,024);
/// past 512 MB a partition spans windows and a client's rows may come in two or three groups.
pub fn partitions_for(bytes: Option<u64>) -> usize {
    bytes.map_or(256, |b| (b >> 20) as usize).clamp(16, 512)
}

/// Pass one's writer.
pub struct Partitions {
    dir: tempfile::TempDir,
    files: Vec<BufWriter<File>>,
    rows: u64,
}

impl Partitions {
    /// `count` empty partitions in a fresh temporary directory.
    ///
    /// # Errors
    /// The directory or a file cannot be made.
    pub fn new(count: usize) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("engagement-import-")
            .tempdir()?;
        let files = (0..count.max(1))
            .map(|i| File::create(dir.path().join(format!("{i}.tsv"))).map(BufWriter::new))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            dir,
            files,
            rows: 0,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends `row` to its client's partition. No field holds a control character (the
    /// value types refuse them), so tabs and the unit separator delimit safely.
    ///
    /// # Errors
    /// Writing failed.
    pub fn push(&mut self, row: &OrderRecord) -> std::io::Result<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        row.external_id.hash(&mut hasher);
        let index = (hasher.finish() % self.files.len() as u64) as usize;
        let order = &row.order;
        writeln!(
            self.files[index],
            "{}\t{}\t{}\t{}\t{}\t{}",
            row.line,
            row.external_id.as_str(),
            order.order_id.as_str(),
            order.placed_at.timestamp_micros(),
            order.amount.cents(),
            order.categories.as_slice().join("\u{1f}")
        )?;
        self.rows += 1;
        Ok(())
    }

    /// Pass two: sends every row to `rows`, each client's rows together. Returns false if the
    /// receiver went away.
    ///
    /// # Errors
    /// Reading a partition failed, or one holds a row this build did not write.
    pub fn drain(
        mut self,
        rows: &mpsc::Sender<Result<OrderRecord, Rejected>>,
    ) -> std::io::Result<bool> {
        for file in &mut self.files {
            file.flush()?;
        }
        let count = self.files.len();
        drop(std::mem::take(&mut self.files));
        for i in 0..count {
            let path = self.dir.path().join(format!("{i}.tsv"));
            let mut lines = BufReader::new(File::open(&path)?).lines();
            loop {
                let mut window: Vec<OrderRecord> = Vec::new();
                for line in lines.by_ref().take(WINDOW_ROWS) {
                    window.push(decode(&line?)?);
                }
                if window.is_empty() {
                    break;
                }
                // Stable: each client's rows keep their file order; clients in order of first
                // appearance.
                let mut slot: HashMap<ExternalId, usize> = HashMap::new();
                let mut groups: Vec<Vec<OrderRecord>> = Vec::new();
                for row in window {
                    let index = *slot.entry(row.external_id.clone()).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[index].push(row);
                }
                for row in groups.into_iter().flatten() {
                    if rows.blocking_send(Ok(row)).is_err() {
                        return Ok(false);
                    }
                }
            }
            std::fs::remove_file(&path)?;
        }
        Ok(true)
    }
}

fn decode(line: &str) -> std::io::Result<OrderRecord> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "a damaged partition row");
    let mut fields = line.split('\t');
    let mut next = || fields.next().ok_or_else(bad);
    let line_number: u64 = next()?.parse().map_err(|_| bad())?;
    let external_id = ExternalId::parse(next()?).map_err(|_| bad())?;
    let order_id = OrderId::parse(next()?).map_err(|_| bad())?;
    let placed_at =
        DateTime::from_timestamp_micros(next()?.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    let amount =
        Money::from_cents(next()?.parse().map_err(|_| bad())?, "amount").map_err(|_| bad())?;
    let categories: Vec<&str> = next()?.split('\u{1f}').filter(|c| !c.is_empty()).collect();
    Ok(OrderRecord {
        line: line_number,
        external_id,
        order: PlaceOrder {
            order_id,
            amount,
            placed_at,
            categories: Categories::parse(&categories, "categories").map_err(|_| bad())?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone as _, Utc};

    fn row(line: u64, client: &str, order: &str) -> OrderRecord {
        OrderRecord {
            line,
            external_id: ExternalId::parse(client).unwrap(),
            order: PlaceOrder {
                order_id: OrderId::parse(order).unwrap(),
                amount: Money::from_cents(1_234, "amount").unwrap(),
                placed_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
                categories: Categories::parse(&["Denim", "Tops & Tees"], "c").unwrap(),
            },
        }
    }

    #[test]
    fn rows_come_back_grouped_by_client_in_file_order_and_unchanged() {
        let input: Vec<OrderRecord> = (0..500)
            .map(|i| row(i + 2, &format!("c {}", i % 37), &format!("o{i}")))
            .collect();
        let mut partitions = Partitions::new(4).unwrap();
        for r in &input {
            partitions.push(r).unwrap();
        }
        assert_eq!(partitions.rows(), 500);
        let dir = partitions.dir.path().to_owned();
        let (tx, mut rx) = mpsc::channel(1_000);
        assert!(partitions.drain(&tx).unwrap());
        drop(tx);
        let mut output = Vec::new();
        while let Ok(Ok(r)) = rx.try_recv() {
            output.push(r);
        }
        assert!(!dir.exists(), "the temporary files are gone");
        assert_eq!(output.len(), 500);
        // Every client's rows are contiguous and in file order.
        let mut seen = std::collections::HashSet::new();
        let mut previous: Option<&OrderRecord> = None;
        for r in &output {
            if previous.is_none_or(|p| p.external_id != r.external_id) {
                assert!(
                    seen.insert(r.external_id.clone()),
                    "{} split",
                    r.external_id
                );
            } else {
                assert!(previous.unwrap().line < r.line);
            }
            previous = Some(r);
        }
        let mut sorted = output.clone();
        sorted.sort_by_key(|r| r.line);
        assert_eq!(sorted, input);
    }
}
