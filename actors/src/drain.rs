//! Drain tokens: how the daemon knows its children have finished stopping.
//!
//! Each child holds a [`DrainToken`] while it has work to finish and drops it when
//! done (usually by being dropped itself). [`Drain::wait`] returns when every token is
//! gone or the grace period ran out: completion is seen, never guessed by sleeping.

use std::time::Duration;

use tokio::sync::mpsc;

/// Held by a child until it has finished stopping.
#[derive(Clone, Debug)]
pub struct DrainToken {
    _tx: mpsc::Sender<()>,
}

/// The daemon's side: hands out tokens, then waits for them to be dropped.
#[derive(Debug)]
pub struct Drain {
    tx: Option<mpsc::Sender<()>>,
    rx: mpsc::Receiver<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self { tx: Some(tx), rx }
    }
}

impl Drain {
    /// A token for a new child; `None` once waiting has begun.
    pub fn token(&self) -> Option<DrainToken> {
        self.tx.clone().map(|tx| DrainToken { _tx: tx })
    }

    /// Waits until every token is dropped (true) or `grace` has passed (false).
    pub async fn wait(mut self, grace: Duration) -> bool {
        self.tx = None;
        tokio::time::timeout(grace, self.rx.recv()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn wait_returns_when_the_last_token_is_dropped() {
        let drain = Drain::default();
        let token = drain.token().expect("not yet waiting");
        let holder = actix_rt::spawn(async move {
            tokio::task::yield_now().await;
            drop(token);
        });
        assert!(drain.wait(Duration::from_secs(5)).await);
        holder.await.expect("holder ran");
    }

    #[actix_rt::test]
    async fn wait_gives_up_after_the_grace_period() {
        let drain = Drain::default();
        let _kept = drain.token().expect("not yet waiting");
        tokio::time::pause();
        assert!(!drain.wait(Duration::from_secs(30)).await);
    }
}
