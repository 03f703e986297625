//! Per-socket rate limiting: a token bucket refilled continuously at the sustained rate, holding
//! at most the burst, and a count of the events it refused: a socket refused `max_refusals`
//! times within `refusal_window` is exhausted (the node disconnects it), so a client that keeps
//! flooding cannot keep a worker busy answering `rate_limited`. Pure logic; the caller passes
//! the clock so tests need none.

use std::time::{Duration, Instant};

/// The configured limit: `per_second` events sustained, `burst` at once; at most
/// `max_refusals` refused events within `refusal_window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
    pub max_refusals: u32,
    pub refusal_window: Duration,
}

#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    /// Refusals in the current window, and when that window started.
    refusals: u32,
    window_start: Instant,
}

impl TokenBucket {
    /// A full bucket: a new client may send a burst at once.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            last: now,
            refusals: 0,
            window_start: now,
        }
    }

    /// Takes one token if there is one; false means the event is over the limit.
    pub fn try_take(&mut self, limit: RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * limit.per_second).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a refused event; true once `max_refusals` were refused within one window.
    pub fn refused(&mut self, limit: RateLimit, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= limit.refusal_window {
            self.window_start = now;
            self.refusals = 0;
        }
        self.refusals = self.refusals.saturating_add(1);
        self.is_exhausted(limit)
    }

    /// Whether the socket was refused `max_refusals` times in the current window.
    pub fn is_exhausted(&self, limit: RateLimit) -> bool {
        self.refusals >= limit.max_refusals
    }

    /// How long until the next token (for the error message).
    pub fn wait_for_next(&self, limit: RateLimit) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / limit.per_second.max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 3.0,
        max_refusals: 5,
        refusal_window: Duration::from_secs(10),
    };

    #[test]
    fn a_burst_passes_then_the_sustained_rate_holds() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        assert!((0..3).all(|_| bucket.try_take(LIMIT, start)));
        assert!(
            !bucket.try_take(LIMIT, start),
            "the fourth at once is over the burst"
        );
        assert!(bucket.wait_for_next(LIMIT) <= Duration::from_millis(100));
        // 100 ms later one token (10 per second) has come back, and only one.
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take(LIMIT, later));
        assert!(!bucket.try_take(LIMIT, later));
        // A long pause refills up to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            (0..10)
                .filter(|_| bucket.try_take(LIMIT, much_later))
                .count(),
            3
        );
    }

    /// The retry time in a `rate_limited` answer: the time until one whole token is back.
    #[test]
    fn the_wait_is_for_the_missing_part_of_a_token() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        assert!((0..3).all(|_| bucket.try_take(LIMIT, start)));
        assert_eq!(bucket.wait_for_next(LIMIT), Duration::from_millis(100));
        // 40 ms later 0.4 of a token has come back: 60 ms to go.
        assert!(!bucket.try_take(LIMIT, start + Duration::from_millis(40)));
        let wait = bucket.wait_for_next(LIMIT);
        assert!(
            wait.abs_diff(Duration::from_millis(60)) < Duration::from_micros(10),
            "{wait:?}"
        );
        // With a token there, no wait.
        let full = TokenBucket::new(LIMIT, start);
        assert_eq!(full.wait_for_next(LIMIT), Duration::ZERO);
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for i in 0..1000 {
            let now = start + Duration::from_millis(100 * i);
            assert!(bucket.try_take(LIMIT, now), "refused at event {i}");
        }
    }

    #[test]
    fn refusals_within_a_window_exhaust_the_socket_and_a_new_window_forgives() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for i in 0..4 {
            assert!(!bucket.refused(LIMIT, start + Duration::from_secs(i)));
        }
        assert!(
            bucket.refused(LIMIT, start + Duration::from_secs(9)),
            "the fifth in 10 s"
        );
        assert!(bucket.is_exhausted(LIMIT));

        // Four refusals, a quiet window, four more: never five in one window.
        let mut bucket = TokenBucket::new(LIMIT, start);
        for i in 0..4 {
            assert!(!bucket.refused(LIMIT, start + Duration::from_millis(i)));
        }
        for i in 0..4 {
            assert!(!bucket.refused(
                LIMIT,
                start + Duration::from_secs(11) + Duration::from_millis(i)
            ));
        }
    }
}
