//! `engagement backtest`: reads a purchase-history CSV and reports how each policy's scores
//! separate returning customers from lapsing ones. The scoring is the domain's own code.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use domain::scoring::{backtest, policy_by_name, Transaction, DEFAULT_POLICY, POLICY_NAMES};
use domain::values::Money;

use crate::config::BacktestConfig;

/// Parses `customer_id,date,items,amount` lines; a first line starting with a letter-only
/// first field (a header) is skipped.
///
/// # Errors
/// A line that does not parse, named by its number.
pub fn parse_transactions(text: &str) -> anyhow::Result<Vec<Transaction>> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || (number == 1 && line.starts_with("customer_id")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [customer_id, date, _items, amount] = fields.as_slice() else {
            anyhow::bail!(
                "line {number}: expected 4 fields customer_id,date,items,amount, found {}",
                fields.len()
            );
        };
        anyhow::ensure!(
            !customer_id.is_empty(),
            "line {number}: customer_id is empty"
        );
        let date = date
            .parse()
            .with_context(|| format!("line {number}: date {date:?} is not YYYY-MM-DD"))?;
        let amount = Money::parse(amount, "amount").with_context(|| format!("line {number}"))?;
        out.push(Transaction {
            customer_id: (*customer_id).to_owned(),
            date,
            amount,
        });
    }
    Ok(out)
}

/// Runs the backtest and prints the table (and writes scores if asked).
///
/// # Errors
/// The file cannot be read or parsed, or the scores cannot be written.
pub fn run(config: &BacktestConfig) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&config.transactions)
        .with_context(|| format!("reading {}", config.transactions.display()))?;
    let transactions = parse_transactions(&text)
        .with_context(|| format!("in {}", config.transactions.display()))?;
    print!("{}", report(&transactions, config)?);
    Ok(())
}

fn report(transactions: &[Transaction], config: &BacktestConfig) -> anyhow::Result<String> {
    let names: Vec<&str> = match &config.policy {
        Some(name) => vec![name.as_str()],
        None => POLICY_NAMES.to_vec(),
    };
    let mut table = format!(
        "cut-off {}, horizon {} days\n{:<12} {:>9} {:>11} {:>6} {:>8} {:>10} {:>7}\n",
        config.cutoff,
        config.horizon,
        "policy",
        "customers",
        "return rate",
        "AUC",
        "flagged",
        "precision",
        "recall"
    );
    for name in names {
        let policy = policy_by_name(name).with_context(|| format!("unknown policy {name}"))?;
        let (r, scores) = backtest(transactions, config.cutoff, config.horizon, policy.as_ref());
        writeln!(
            table,
            "{:<12} {:>9} {:>11.3} {:>6.3} {:>8.3} {:>10.3} {:>7.3}",
            r.policy, r.customers, r.return_rate, r.auc, r.flagged_share, r.precision, r.recall
        )?;
        let wanted = config.policy.as_deref().unwrap_or(DEFAULT_POLICY);
        if let (Some(path), true) = (&config.scores_out, name == wanted) {
            write_scores(path, &scores)?;
        }
    }
    Ok(table)
}

fn write_scores(path: &Path, scores: &[domain::scoring::CustomerScore]) -> anyhow::Result<()> {
    let mut csv = String::from("customer_id,score,band\n");
    for s in scores {
        writeln!(csv, "{},{},{}", s.customer_id, s.score, s.band.as_str())?;
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_transactions;

    #[test]
    fn lines_parse_and_bad_ones_are_named() {
        let ok = parse_transactions(
            "customer_id,date,items,amount\n1,1997-01-01,1,11.77\n\n3,1997-01-02,2,20.76\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].amount.cents(), 1177);
        let err = parse_transactions("1,1997-01-01,1,11.77\n2,1997-13-01,1,5\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = parse_transactions("1,1997-01-01,1\n").unwrap_err();
        assert!(format!("{err:#}").contains("expected 4 fields"), "{err:#}");
        let err = parse_transactions("1,1997-01-01,1,-3\n").unwrap_err();
        assert!(format!("{err:#}").contains("negative"), "{err:#}");
    }
}
