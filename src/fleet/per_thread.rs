//! Connections to one Redis server, one for each thread that sends commands.
//!
//! A multiplexed connection's driver is a task: it writes the commands it is handed and hands
//! back the answers. When that task runs on another runtime than the request that waits for
//! the answer, every command costs two wake-ups across threads (the driver's runtime woken to
//! write, the request's runtime woken for the answer): an `eventfd` write, an `epoll_wait` and a
//! context switch each way, more CPU than the command itself with `local_cache_ttl = "0s"`.
//! So each sending thread gets a connection made on its own runtime, whose driver is scheduled
//! right beside the request on the same worker.
//!
//! A thread can outlive the runtime it ran (a temporary runtime at start-up, a test's): each
//! connection remembers its runtime through a task that lives as long as it, and is made again
//! when that runtime is gone.

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;

thread_local! {
    /// This thread's id, read once: `std::thread::current()` clones the thread's handle (an
    /// atomic count up and down) on every command.
    static THREAD: ThreadId = std::thread::current().id();
}

/// Lazily made connections to one server, by sending thread.
pub struct PerThread {
    client: redis::Client,
    config: ConnectionManagerConfig,
    by_thread: DashMap<ThreadId, Made>,
}

/// A connection and the runtime its driver runs on.
struct Made {
    manager: ConnectionManager,
    /// Dropped, with the task holding it, when that runtime shuts down.
    runtime: Weak<()>,
}

impl PerThread {
    /// Connections to `client`'s server with `config`; none is made yet.
    pub fn new(client: redis::Client, config: ConnectionManagerConfig) -> PerThread {
        PerThread {
            client,
            config,
            by_thread: DashMap::new(),
        }
    }

    /// This thread's connection (connected on first use), made on its current runtime; `None`
    /// outside a Tokio runtime.
    pub fn current(&self) -> Option<Result<ConnectionManager, redis::RedisError>> {
        tokio::runtime::Handle::try_current().ok()?;
        let thread = THREAD.with(|id| *id);
        if let Some(made) = self.by_thread.get(&thread)
            && made.runtime.strong_count() > 0
        {
            return Some(Ok(made.manager.clone()));
        }
        Some(self.make(thread))
    }

    fn make(&self, thread: ThreadId) -> Result<ConnectionManager, redis::RedisError> {
        // Spawns on the current runtime, as the connection's driver will be on first use.
        let manager =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
        let alive = Arc::new(());
        let runtime = Arc::downgrade(&alive);
        tokio::spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await
        });
        self.by_thread.insert(
            thread,
            Made {
                manager: manager.clone(),
                runtime,
            },
        );
        Ok(manager)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ping(per: &PerThread) -> redis::RedisResult<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let mut c = per.current().expect("inside a runtime")?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
    }

    /// A thread that ran one runtime and then another gets a connection on the second (the
    /// first one's driver went with its runtime). Against the machine's Redis on 6379, which
    /// `.ci/run` starts.
    #[test]
    fn a_thread_gets_a_new_connection_when_its_runtime_is_gone() {
        let client = redis::Client::open("redis://127.0.0.1:6379").expect("a client");
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(0);
        let per = PerThread::new(client, config);
        assert!(per.current().is_none(), "outside a runtime");
        assert_eq!(ping(&per).expect("first runtime"), "PONG");
        assert_eq!(ping(&per).expect("second runtime"), "PONG");
        assert_eq!(per.by_thread.len(), 1, "one entry for this thread");
        let other = std::thread::scope(|s| s.spawn(|| ping(&per)).join().expect("thread"));
        assert_eq!(other.expect("another thread"), "PONG");
        assert_eq!(per.by_thread.len(), 2);
    }
}
