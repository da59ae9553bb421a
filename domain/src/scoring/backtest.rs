//! Backtesting a policy on purchase histories: build each customer's facts from the orders up
//! to a cut-off, score them with the policy's own code as of the cut-off, and check the scores
//! against who ordered again within a horizon.

use std::collections::HashMap;

use chrono::{Duration, NaiveDate, TimeZone, Utc};

use super::{Band, ClientFacts, ScoringPolicy};
use crate::values::Money;

/// One purchase line (several lines of one customer on one day are one order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The customer.
    pub customer_id: String,
    /// The day.
    pub date: NaiveDate,
    /// The amount.
    pub amount: Money,
}

/// One customer's score at the cut-off and what happened next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerScore {
    /// The customer.
    pub customer_id: String,
    /// The score as of the cut-off.
    pub score: u8,
    /// Its band.
    pub band: Band,
    /// Ordered again within the horizon.
    pub returned: bool,
}

/// How well a policy's scores told returning customers from lapsing ones.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestReport {
    /// The policy.
    pub policy: String,
    /// Customers with an order on or before the cut-off.
    pub customers: usize,
    /// Share of them who ordered within the horizon.
    pub return_rate: f64,
    /// Area under the ROC curve of the score against "returned" (ties count half).
    pub auc: f64,
    /// Share of customers scored below the threshold.
    pub flagged_share: f64,
    /// Of the flagged, the share who did not return.
    pub precision: f64,
    /// Of those who did not return, the share flagged.
    pub recall: f64,
}

/// Scores every customer with an order on or before `cutoff` as of `cutoff`, and measures the
/// scores against orders in `(cutoff, cutoff + horizon_days]`.
pub fn backtest(
    transactions: &[Transaction],
    cutoff: NaiveDate,
    horizon_days: i64,
    policy: &dyn ScoringPolicy,
) -> (BacktestReport, Vec<CustomerScore>) {
    let horizon_end = cutoff + Duration::days(horizon_days);
    // customer -> (orders by day up to the cut-off, returned)
    let mut customers: HashMap<&str, (HashMap<NaiveDate, i64>, bool)> = HashMap::new();
    for t in transactions {
        let entry = customers.entry(t.customer_id.as_str()).or_default();
        if t.date <= cutoff {
            *entry.0.entry(t.date).or_default() += t.amount.cents();
        } else if t.date <= horizon_end {
            entry.1 = true;
        }
    }
    let at = |day: NaiveDate| Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN));
    let now = at(cutoff);
    let threshold = policy.threshold();
    let mut scores: Vec<CustomerScore> = customers
        .into_iter()
        .filter(|(_, (orders, _))| !orders.is_empty())
        .map(|(id, (orders, returned))| {
            let count = u32::try_from(orders.len()).unwrap_or(u32::MAX);
            let total: i64 = orders.values().sum();
            let first = orders.keys().min().copied().map(at);
            let last = orders.keys().max().copied().map(at);
            let facts = ClientFacts {
                order_count: count,
                average_order_value: Money::average(
                    Money::from_cents(total, "amount").unwrap_or(Money::ZERO),
                    count,
                ),
                first_order_at: first,
                last_order_at: last,
                created_at: first,
                ..ClientFacts::default()
            };
            let assessment = policy.assess(&facts, now, None);
            CustomerScore {
                customer_id: id.to_owned(),
                score: assessment.score.value(),
                band: assessment.band,
                returned,
            }
        })
        .collect();
    scores.sort_by(|a, b| natural_order(&a.customer_id, &b.customer_id));

    let total = scores.len();
    let returned = scores.iter().filter(|s| s.returned).count();
    let flagged: Vec<&CustomerScore> = scores.iter().filter(|s| s.score < threshold).collect();
    let flagged_lapsed = flagged.iter().filter(|s| !s.returned).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let report = BacktestReport {
        policy: policy.name().to_owned(),
        customers: total,
        return_rate: ratio(returned, total),
        auc: auc(&scores),
        flagged_share: ratio(flagged.len(), total),
        precision: ratio(flagged_lapsed, flagged.len()),
        recall: ratio(flagged_lapsed, total - returned),
    };
    (report, scores)
}

/// Numeric ids in numeric order, others as text.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// The Mann-Whitney AUC of the score against `returned`, with tied scores sharing their rank.
fn auc(scores: &[CustomerScore]) -> f64 {
    let positives = scores.iter().filter(|s| s.returned).count() as f64;
    let negatives = scores.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return 0.5;
    }
    let mut by_score: Vec<(u8, bool)> = scores.iter().map(|s| (s.score, s.returned)).collect();
    by_score.sort_unstable_by_key(|(score, _)| *score);
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < by_score.len() {
        let mut j = i;
        while j < by_score.len() && by_score[j].0 == by_score[i].0 {
            j += 1;
        }
        // Ranks i+1..=j share their average.
        let average_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += average_rank * by_score[i..j].iter().filter(|(_, r)| *r).count() as f64;
        i = j;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::SeedV1;

    fn t(id: &str, date: &str, amount: &str) -> Transaction {
        Transaction {
            customer_id: id.into(),
            date: date.parse().unwrap(),
            amount: Money::parse(amount, "amount").unwrap(),
        }
    }

    #[test]
    fn facts_come_from_orders_up_to_the_cutoff_and_returns_from_the_horizon() {
        let history = [
            t("1", "1997-01-01", "10"),
            t("1", "1997-01-01", "5"), // same day: one order of 15
            t("1", "1997-03-01", "30"),
            t("2", "1997-01-15", "20"),
            t("2", "1997-05-15", "20"), // inside the horizon
            t("3", "1997-06-01", "20"), // after the cut-off only: not a customer yet
            t("1", "1997-09-01", "20"), // beyond the horizon
        ];
        let cutoff: NaiveDate = "1997-03-31".parse().unwrap();
        let (report, scores) = backtest(&history, cutoff, 90, &SeedV1);
        assert_eq!(report.customers, 2);
        assert_eq!(
            scores
                .iter()
                .map(|s| s.customer_id.as_str())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        // Customer 1: 2 orders, AOV 22.50, last 30 days ago: 100 + 3 + 1.125 = 104 -> 100.
        assert_eq!((scores[0].score, scores[0].returned), (100, false));
        // Customer 2: 1 order of 20.00 75 days ago: 100 - 30 + 1.5 + 1 = 72.5 -> 73.
        assert_eq!((scores[1].score, scores[1].returned), (73, true));
        assert!((report.return_rate - 0.5).abs() < 1e-12);
        assert!(
            (report.auc - 0.0).abs() < 1e-12,
            "the returner scored lower"
        );
        assert_eq!(report.flagged_share, 0.0);
    }

    #[test]
    fn auc_counts_ties_as_half() {
        let s = |score, returned| CustomerScore {
            customer_id: String::new(),
            score,
            band: Band::Watch,
            returned,
        };
        assert_eq!(auc(&[s(10, false), s(20, true)]), 1.0);
        assert_eq!(auc(&[s(10, true), s(20, false)]), 0.0);
        assert_eq!(auc(&[s(10, true), s(10, false)]), 0.5);
        assert_eq!(
            auc(&[s(1, false), s(5, true), s(5, false), s(9, true)]),
            0.875
        );
    }
}
