//! A circuit breaker toward the email writer's provider.
//!
//! After repeated failures in a row the breaker opens: workers stop calling the provider for a
//! cool-off and due jobs wait without spending attempts; then one probe tests the provider, and
//! success resumes the flow. A failed probe opens it again for twice as long (up to 10
//! minutes). An outage of an hour dead-letters nothing.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant, cool_off: Duration },
    HalfOpen { probing: bool, cool_off: Duration },
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Call freely.
    Call,
    /// Make one probe call.
    Probe,
    /// Do not call until then.
    WaitUntil(Instant),
}

/// A circuit breaker toward the LLM.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<BreakerState>,
    threshold: u32,
    first_cool_off: Duration,
}

const MAX_COOL_OFF: Duration = Duration::from_secs(600);

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cool_off: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            threshold: threshold.max(1),
            first_cool_off: cool_off,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks to call the provider.
    pub fn permit(&self) -> Permit {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Permit::Call,
            BreakerState::Open { until, cool_off } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen {
                    probing: true,
                    cool_off,
                };
                Permit::Probe
            }
            BreakerState::Open { until, .. } => Permit::WaitUntil(until),
            BreakerState::HalfOpen {
                probing: false,
                cool_off,
            } => {
                *state = BreakerState::HalfOpen {
                    probing: true,
                    cool_off,
                };
                Permit::Probe
            }
            BreakerState::HalfOpen { probing: true, .. } => {
                Permit::WaitUntil(Instant::now() + Duration::from_millis(200))
            }
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        *self.lock() = BreakerState::Closed { failures: 0 };
        crate::metrics::llm_circuit(false);
    }

    /// A call failed; returns true if the breaker is (now) open.
    pub fn failure(&self) -> bool {
        let mut state = self.lock();
        let next = match *state {
            BreakerState::Closed { failures } if failures + 1 >= self.threshold => {
                tracing::warn!(failures = failures + 1, "LLM circuit opened");
                BreakerState::Open {
                    until: Instant::now() + self.first_cool_off,
                    cool_off: self.first_cool_off,
                }
            }
            BreakerState::Closed { failures } => BreakerState::Closed {
                failures: failures + 1,
            },
            BreakerState::HalfOpen { cool_off, .. } | BreakerState::Open { cool_off, .. } => {
                let cool_off = (cool_off * 2).min(MAX_COOL_OFF);
                BreakerState::Open {
                    until: Instant::now() + cool_off,
                    cool_off,
                }
            }
        };
        *state = next;
        let open = !matches!(next, BreakerState::Closed { .. });
        crate::metrics::llm_circuit(open);
        open
    }

    /// Gives back a probe permit that found no job to probe with.
    pub fn release_probe(&self) {
        let mut state = self.lock();
        if let BreakerState::HalfOpen { cool_off, .. } = *state {
            *state = BreakerState::HalfOpen {
                probing: false,
                cool_off,
            };
        }
    }

    /// The state in words, for the health report.
    pub fn describe(&self) -> String {
        match *self.lock() {
            BreakerState::Closed { .. } => "circuit closed".to_owned(),
            BreakerState::Open { until, .. } => {
                format!(
                    "circuit open, next probe in {}s",
                    until.saturating_duration_since(Instant::now()).as_secs()
                )
            }
            BreakerState::HalfOpen { .. } => "circuit half-open, probing".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_failures_in_a_row_and_one_probe_closes_it() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        assert_eq!(breaker.permit(), Permit::Call);
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "the third failure in a row opens it");
        assert!(matches!(breaker.permit(), Permit::WaitUntil(_)));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert!(
            matches!(breaker.permit(), Permit::WaitUntil(_)),
            "one probe at a time"
        );
        assert!(breaker.failure(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            matches!(breaker.permit(), Permit::WaitUntil(_)),
            "for twice as long"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        breaker.success();
        assert_eq!(breaker.permit(), Permit::Call);
        assert_eq!(breaker.describe(), "circuit closed");
    }
}
