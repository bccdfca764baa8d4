//! The invalidation subscriber: every instance listens on the fleet's channel and drops from its
//! in-process cache what another instance changed or ended. A message missed is a session
//! served from memory a little longer (at most `local_cache_ttl`), so whenever the subscription
//! may have missed something — it starts, it is re-established, its connection stops answering
//! pings — the whole cache is dropped instead.

use super::{Fleet, Invalidation};
use async_trait::async_trait;
use futures::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often the subscription proves it is alive.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Wait before subscribing again after a failure (doubling up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What to do with an invalidation.
pub type Handler = Arc<dyn Fn(Invalidation) + Send + Sync>;

/// The subscriber, as a background service.
pub struct Subscriber {
    fleet: Arc<Fleet>,
    handler: Handler,
}

impl Subscriber {
    /// A subscriber passing every invalidation to `handler`.
    pub fn new(fleet: Arc<Fleet>, handler: Handler) -> Subscriber {
        Subscriber { fleet, handler }
    }

    /// Subscribes and handles messages until the subscription fails.
    async fn run_once(&self) -> Result<(), String> {
        let timeout = self.fleet.settings.connect_timeout;
        let client = self
            .fleet
            .redis
            .subscriber_client()
            .await
            .map_err(|e| e.to_string())?;
        let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(timeout, pubsub.subscribe(self.fleet.channel()))
            .await
            .map_err(|_| "subscribing timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        // Whatever was published while we were not listening is lost: start clean.
        (self.handler)(Invalidation::All);
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return Err("the subscription closed".into()) };
                    let text: String = msg.get_payload().unwrap_or_default();
                    (self.handler)(Invalidation::decode(&text));
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        self.fleet.settings.command_timeout.max(Duration::from_millis(500)),
                        sink.ping::<redis::Value>(),
                    ).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return Err("the subscription stopped answering".into());
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Subscriber {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = tokio::select! {
                r = self.run_once() => r,
                _ = shutdown.changed() => return,
            };
            // Between subscriptions nothing arrives: drop everything now, and again when the
            // next subscription starts.
            (self.handler)(Invalidation::All);
            if let Err(e) = result {
                tracing::warn!("Redis invalidation subscription: {e}; subscribing again");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
