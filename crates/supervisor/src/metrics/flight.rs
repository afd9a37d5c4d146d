//! One scrape for every request that waits for it ([`SingleFlight`]).

use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// A value gathered on demand and shared with the requests that came while it was being
/// gathered: at most one gathering at a time, and N requests at once cost one.
pub(crate) struct SingleFlight<T> {
    last: Mutex<Option<(Instant, T)>>,
    /// The oldest a value may be when a request that waited for it gets it.
    max_age: Duration,
}

impl<T> SingleFlight<T> {
    /// Values shared for at most `max_age` after they were gathered.
    pub(crate) fn new(max_age: Duration) -> SingleFlight<T> {
        SingleFlight {
            last: Mutex::new(None),
            max_age,
        }
    }

    /// The value: the last one when it was finished after this call began (the call
    /// waited for it) and is at most `max_age` old, else a fresh one from `gather`, which
    /// the calls that come meanwhile wait for. The guard holds the value for changes
    /// (e.g. encodings added) and keeps other calls waiting until it is dropped.
    pub(crate) async fn get<F, Fut>(&self, gather: F) -> MappedMutexGuard<'_, T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        let fresh = last
            .as_ref()
            .is_some_and(|(done, _)| *done >= asked && done.elapsed() <= self.max_age);
        if !fresh {
            let value = gather().await;
            *last = Some((Instant::now(), value));
        }
        MutexGuard::map(last, |last| match last {
            Some((_, value)) => value,
            None => unreachable!("filled above"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn calls_that_come_while_one_gathers_share_it_and_later_ones_gather_again() {
        let flight = SingleFlight::new(Duration::from_secs(1));
        let gathers = AtomicUsize::new(0);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let gather = |n| {
            let gathers = &gathers;
            move || async move {
                gathers.fetch_add(1, Ordering::SeqCst);
                n
            }
        };
        // The first gathers and is held; the second comes meanwhile; then the first is let go.
        let (first, second, ()) = tokio::join!(
            async {
                *flight
                    .get(|| async {
                        gathers.fetch_add(1, Ordering::SeqCst);
                        let _ = released.await;
                        1
                    })
                    .await
            },
            async { *flight.get(gather(2)).await },
            async {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                let _ = release.send(());
            },
        );
        assert_eq!((first, second), (1, 1), "the second shared the first's");
        assert_eq!(gathers.load(Ordering::SeqCst), 1);
        // A call after that one finished gathers anew.
        assert_eq!(*flight.get(gather(3)).await, 3);
        assert_eq!(gathers.load(Ordering::SeqCst), 2);
    }
}
