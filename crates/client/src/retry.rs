//! Deadlines and retries with exponential backoff.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tonic::Status;
use tonic_types::StatusExt;

use crate::error::{ClientError, is_retryable};

/// How failed calls are retried. Every attempt of one call sends the same
/// request, the same idempotency key included, so a retry of a call whose
/// answer was lost gets the first answer back and charges nothing more.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub initial_backoff: Duration,
    /// Each wait is the previous one times this.
    pub multiplier: u32,
    /// No wait is longer than this (a server's RetryInfo delay included).
    pub max_backoff: Duration,
    /// Waits are drawn uniformly from [wait/2, wait] ("equal jitter"), so
    /// many clients refused at once do not retry at once.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 4 attempts, waiting 50 ms, 100 ms, 200 ms (with jitter), at most 2 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            multiplier: 2,
            max_backoff: Duration::from_secs(2),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based) with `status`:
    /// the server's `google.rpc.RetryInfo` delay when it sent one, else
    /// the exponential backoff; capped at `max_backoff`.
    pub(crate) fn wait(&self, attempt: u32, status: &Status) -> Duration {
        if let Some(delay) = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
        {
            return delay.min(self.max_backoff);
        }
        let factor = self
            .multiplier
            .max(1)
            .saturating_pow(attempt.saturating_sub(1));
        let wait = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        if self.jitter {
            let half = wait / 2;
            let spread = half.as_nanos() as u64;
            half + Duration::from_nanos(if spread == 0 { 0 } else { random() % spread })
        } else {
            wait
        }
    }
}

/// A random number from the standard library's per-process hasher keys;
/// jitter needs no more.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// Runs `attempt` until it succeeds, fails with a code that is not
/// retried, or the policy's attempts are spent. Each attempt gets
/// `deadline` (sent as `grpc-timeout`, and enforced here as well).
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Duration,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let attempts = policy.max_attempts.max(1);
    let mut tried = 0;
    loop {
        tried += 1;
        let status = match tokio::time::timeout(deadline, attempt(deadline)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded(format!("no answer within {deadline:?}")),
        };
        if !is_retryable(&status) || tried >= attempts {
            return Err(ClientError::from_status(status, tried));
        }
        let wait = policy.wait(tried, &status);
        tracing::debug!(attempt = tried, code = ?status.code(), ?wait, "retrying a Tally call");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt};

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            jitter,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(false);
        let unavailable = Status::unavailable("down");
        let waits: Vec<_> = (1..=8).map(|n| p.wait(n, &unavailable)).collect();
        assert_eq!(waits[0], Duration::from_millis(50));
        assert_eq!(waits[1], Duration::from_millis(100));
        assert_eq!(waits[2], Duration::from_millis(200));
        assert_eq!(waits[7], Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_wait() {
        let p = policy(true);
        for _ in 0..100 {
            let wait = p.wait(3, &Status::unavailable("down"));
            assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&wait));
        }
    }

    #[test]
    fn the_servers_retry_info_wins_up_to_the_cap() {
        let p = policy(true);
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_millis(700)));
        let status = Status::with_error_details(Code::ResourceExhausted, "busy", details);
        assert_eq!(p.wait(1, &status), Duration::from_millis(700));
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_secs(60)));
        let status = Status::with_error_details(Code::ResourceExhausted, "busy", details);
        assert_eq!(p.wait(1, &status), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts_and_on_refusals() {
        let p = policy(false);
        let mut calls = 0;
        let result: Result<(), _> = with_retries(&p, Duration::from_secs(1), |_| {
            calls += 1;
            async { Err(Status::unavailable("down")) }
        })
        .await;
        assert_eq!(calls, 4);
        assert!(matches!(
            result,
            Err(ClientError::Unavailable { attempts: 4, .. })
        ));

        let mut calls = 0;
        let result: Result<(), _> = with_retries(&p, Duration::from_secs(1), |_| {
            calls += 1;
            async { Err(Status::failed_precondition("no")) }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(result, Err(ClientError::Refused { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_deadline_is_retried() {
        let p = policy(false);
        let mut calls = 0;
        let result = with_retries(&p, Duration::from_millis(100), |_| {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Status>(calls)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
    }
}
