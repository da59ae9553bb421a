//! Requests per token: each caller may send `per_second` requests a second, in bursts of up
//! to `burst`; beyond that a request is refused with 429 and `RATE_LIMITED`, and `Retry-After`
//! says when the next one will pass. One caller flooding the API cannot starve the others.
//!
//! The generic cell rate algorithm (GCRA): one instant per caller, the "theoretical arrival
//! time" of their next request, so the state is as small and exact as a token bucket's without
//! a refill loop. Callers are tokens' actors, a set fixed by configuration: the map cannot grow
//! without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many requests a caller may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests a second.
    pub per_second: u32,
    /// Requests that may arrive at once.
    pub burst: u32,
}

impl Default for RateLimit {
    /// Generous for people and dashboards, a ceiling for a runaway script.
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
        }
    }
}

/// Per-caller limiter.
#[derive(Debug)]
pub struct RateLimiter {
    emission: Duration,
    tolerance: Duration,
    next_arrival: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// A limiter for `limit` (`per_second` and `burst` of at least 1).
    pub fn new(limit: RateLimit) -> Self {
        let emission = Duration::from_secs(1) / limit.per_second.max(1);
        Self {
            emission,
            tolerance: emission * (limit.burst.max(1) - 1),
            next_arrival: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request by `caller` at `now`; `Err` carries how long until one would pass.
    ///
    /// # Errors
    /// The caller is over their limit (the request is not counted).
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut arrivals = self
            .next_arrival
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = arrivals.get(caller).copied().unwrap_or(now).max(now);
        let earliest = now + self.tolerance;
        if next > earliest {
            return Err(next - earliest);
        }
        match arrivals.get_mut(caller) {
            Some(slot) => *slot = next + self.emission,
            None => {
                arrivals.insert(caller.to_owned(), next + self.emission);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_sustained_rate_and_callers_are_apart() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("a", t0).is_ok());
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(
            limiter.check("b", t0).is_ok(),
            "another caller has their own budget"
        );
        // A refused request is not counted: after the wait exactly one more passes.
        assert!(limiter.check("a", t0 + wait).is_ok());
        assert!(limiter.check("a", t0 + wait).is_err());
        // Idle callers regain their whole burst, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check("a", later).is_ok());
        }
        assert!(limiter.check("a", later).is_err());
    }

    #[test]
    fn a_burst_of_one_is_a_steady_pace() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2,
            burst: 1,
        });
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).is_ok());
        assert_eq!(limiter.check("a", t0), Err(Duration::from_millis(500)));
        assert!(limiter.check("a", t0 + Duration::from_millis(500)).is_ok());
    }
}
