//! The import files of `engagement import` (CSV with a header row, formats in `API.md`):
//!
//! - clients: `external_id,name,email,preferred_categories,created_at`
//! - orders: `external_id,order_id,placed_at,amount,categories`
//!
//! Columns are found by their header name, in any order; categories are `|`-separated; times
//! are RFC 3339, or `YYYY-MM-DD` meaning midnight UTC; amounts are decimals. Each record is
//! parsed on its own: a bad one becomes a [`Rejected`] naming its physical line (the header is
//! line 1) and its column, and the rest go on.

use std::io::Read;

use chrono::{DateTime, NaiveDate, Utc};
use domain::client::PlaceOrder;
use domain::values::{
    Categories, EmailAddress, ExternalId, Money, OrderId, UserName, ValidationError,
};
use tokio::sync::mpsc;

use super::{ClientRecord, OrderRecord, Rejected};

/// Which file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Clients.
    Clients,
    /// Orders.
    Orders,
}

impl Kind {
    /// The columns the header must name.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Clients => &[
                "external_id",
                "name",
                "email",
                "preferred_categories",
                "created_at",
            ],
            Self::Orders => &[
                "external_id",
                "order_id",
                "placed_at",
                "amount",
                "categories",
            ],
        }
    }

    /// Columns a row may leave empty.
    fn optional(self, column: &str) -> bool {
        matches!(
            (self, column),
            (Self::Clients, "preferred_categories" | "created_at") | (Self::Orders, "categories")
        )
    }
}

/// A file that cannot be read as this kind at all (so nothing of it is imported).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The header lacks columns.
    #[error("the header (line 1) lacks the column(s) {missing}; expected {expected}")]
    Header {
        /// The missing column names.
        missing: String,
        /// The expected header.
        expected: String,
    },
    /// Reading failed (not CSV, not UTF-8 in the header, an I/O error).
    #[error("cannot read the file: {0}")]
    Read(#[from] csv::Error),
    /// The temporary files of the regrouping pass could not be written or read.
    #[error("cannot use the temporary directory (TMPDIR): {0}")]
    Spill(#[source] std::io::Error),
}

/// How far the reader is: the bytes consumed so far.
pub type BytesRead = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Reads `input` as a file of `kind` on the calling (blocking) thread, sending every row, or
/// its rejection, to `rows` as it goes; `bytes` follows the position in the input.
///
/// # Errors
/// The header is unusable, or the input cannot be read on.
pub fn read_orders(
    input: impl Read,
    rows: &mpsc::Sender<Result<OrderRecord, Rejected>>,
    bytes: &BytesRead,
) -> Result<u64, FileError> {
    read_orders_into(input, bytes, |row| rows.blocking_send(row).is_ok())
}

/// Like [`read_orders`], handing each row (or its rejection) to `each`, which says whether to
/// go on.
///
/// # Errors
/// The header is unusable, or the input cannot be read on.
pub fn read_orders_into(
    input: impl Read,
    bytes: &BytesRead,
    mut each: impl FnMut(Result<OrderRecord, Rejected>) -> bool,
) -> Result<u64, FileError> {
    read(input, Kind::Orders, bytes, |line, get| {
        each(order(line, get))
    })
}

/// Like [`read_orders`], for clients.
///
/// # Errors
/// The header is unusable, or the input cannot be read on.
pub fn read_clients(
    input: impl Read,
    rows: &mpsc::Sender<Result<ClientRecord, Rejected>>,
    bytes: &BytesRead,
) -> Result<u64, FileError> {
    read(input, Kind::Clients, bytes, |line, get| {
        let row = client(line, get);
        rows.blocking_send(row).is_ok()
    })
}

/// A record's fields by column name; `Err` names a missing column.
type Get<'a> = &'a dyn Fn(&str) -> Result<&'a str, Rejected>;

fn read(
    input: impl Read,
    kind: Kind,
    bytes: &BytesRead,
    mut each: impl FnMut(u64, Get<'_>) -> bool,
) -> Result<u64, FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = reader.headers()?.clone();
    let position_of = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let missing: Vec<&str> = kind
        .columns()
        .iter()
        .copied()
        .filter(|c| position_of(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(FileError::Header {
            missing: missing.join(", "),
            expected: kind.columns().join(","),
        });
    }
    let columns: Vec<(&str, usize)> = kind
        .columns()
        .iter()
        .map(|c| (*c, position_of(c).expect("checked above")))
        .collect();
    let mut record = csv::StringRecord::new();
    let mut count = 0;
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            // A record that is not valid UTF-8 is one bad row, not a bad file.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                let line = e.position().map_or(line, csv::Position::line);
                let go_on = each(line, &|_| {
                    Err(Rejected::new(line, None, "the row is not valid UTF-8"))
                });
                if !go_on {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        count += 1;
        let line = record.position().map_or(line, csv::Position::line);
        bytes.store(
            reader.position().byte(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let record = &record;
        let get = |name: &str| -> Result<&str, Rejected> {
            let index = columns
                .iter()
                .find(|(c, _)| *c == name)
                .map(|(_, i)| *i)
                .expect("a known column");
            match record.get(index) {
                Some(value) if !value.is_empty() || kind.optional(name) => Ok(value),
                Some(_) => Err(Rejected::new(line, Some(name), "is empty")),
                None if kind.optional(name) => Ok(""),
                None => Err(Rejected::new(
                    line,
                    Some(name),
                    "the column is missing from this row",
                )),
            }
        };
        if !each(line, &get) {
            break;
        }
    }
    Ok(count)
}

/// A validation error of the domain, on this line, named by the file's column.
fn invalid(line: u64, column: &str) -> impl Fn(ValidationError) -> Rejected + '_ {
    move |e| Rejected::new(line, Some(column), e.message)
}

/// Parses a time: RFC 3339, or `YYYY-MM-DD` meaning midnight UTC.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

fn time(line: u64, column: &str, raw: &str) -> Result<DateTime<Utc>, Rejected> {
    parse_time(raw).ok_or_else(|| {
        Rejected::new(
            line,
            Some(column),
            format!("not a date: {raw:?} (RFC 3339, or YYYY-MM-DD)"),
        )
    })
}

fn categories(line: u64, column: &str, raw: &str) -> Result<Categories, Rejected> {
    let parts: Vec<&str> = raw
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    Categories::parse(&parts, column).map_err(invalid(line, column))
}

fn order(line: u64, get: Get<'_>) -> Result<OrderRecord, Rejected> {
    Ok(OrderRecord {
        line,
        external_id: ExternalId::parse(get("external_id")?)
            .map_err(invalid(line, "external_id"))?,
        order: PlaceOrder {
            order_id: OrderId::parse(get("order_id")?).map_err(invalid(line, "order_id"))?,
            placed_at: time(line, "placed_at", get("placed_at")?)?,
            amount: Money::parse(get("amount")?, "amount").map_err(invalid(line, "amount"))?,
            categories: categories(line, "categories", get("categories")?)?,
        },
    })
}

fn client(line: u64, get: Get<'_>) -> Result<ClientRecord, Rejected> {
    let created_at = match get("created_at")? {
        "" => None,
        raw => Some(time(line, "created_at", raw)?),
    };
    Ok(ClientRecord {
        line,
        external_id: ExternalId::parse(get("external_id")?)
            .map_err(invalid(line, "external_id"))?,
        name: UserName::parse(get("name")?).map_err(invalid(line, "name"))?,
        email: EmailAddress::parse(get("email")?).map_err(invalid(line, "email"))?,
        preferred_categories: categories(
            line,
            "preferred_categories",
            get("preferred_categories")?,
        )?,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders(text: &str) -> (Vec<Result<OrderRecord, Rejected>>, Result<u64, FileError>) {
        let (tx, mut rx) = mpsc::channel(1_000);
        let read = read_orders(text.as_bytes(), &tx, &BytesRead::default());
        drop(tx);
        let mut rows = Vec::new();
        while let Ok(row) = rx.try_recv() {
            rows.push(row);
        }
        (rows, read)
    }

    #[test]
    fn rows_carry_their_physical_line_and_bad_rows_name_the_column() {
        let text = "external_id,order_id,placed_at,amount,categories\n\
                    c1,o1,2024-03-01,12.50,Denim|Shoes\n\
                    c1,o2,yesterday,1.00,\n\
                    \"c2\",\"o3\nwith a newline\",2024-03-02T10:00:00Z,-3.00,\n\
                    c3,o4,2024-03-02,5\n\
                    ,o5,2024-03-02,5,\n\
                    c4,o6,2024-03-03T00:00:00+02:00,7,Tops\n\
                    c5,o7,2024-03-03,-3.00,\n";
        let (rows, read) = orders(text);
        assert_eq!(read.unwrap(), 7);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 2);
        assert_eq!(first.order.amount.cents(), 1_250);
        assert_eq!(first.order.categories.as_slice().len(), 2);
        let bad: Vec<(u64, Option<String>)> = rows
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|r| (r.line, r.field.clone()))
            .collect();
        assert_eq!(
            bad,
            vec![
                (3, Some("placed_at".into())),
                (4, Some("order_id".into())),
                (7, Some("external_id".into())),
                (9, Some("amount".into())),
            ]
        );
        // A row without the optional last column is fine.
        assert_eq!(rows[3].as_ref().unwrap().line, 6);
        let last = rows[rows.len() - 2].as_ref().unwrap();
        assert_eq!(last.line, 8);
        assert_eq!(
            last.order.placed_at.to_rfc3339(),
            "2024-03-02T22:00:00+00:00"
        );
    }

    #[test]
    fn a_header_without_the_columns_stops_the_file() {
        let (rows, read) = orders("external_id,order_id,amount\nc1,o1,3\n");
        assert!(rows.is_empty());
        let error = read.unwrap_err().to_string();
        assert!(error.contains("placed_at"), "{error}");
    }
}
