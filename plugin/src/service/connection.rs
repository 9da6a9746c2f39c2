//! containerd, reached: the one way the service — and the daemon around it — gets a connection:
//! one attempt ([`Connection::connect`]), or waiting with backoff until containerd answers or the
//! work is cancelled ([`Connection::wait`]), and whether the last attempt got one. How patient a
//! connection is also decides whether an import that containerd fails is tried again
//! ([`crate::service::Importer::import`]).

use crate::containerd::{Client, ContainerdError, Grpc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How to reach containerd: its socket, or (in tests) a fake.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// A connection, or why there is none.
    async fn connect(&self) -> Result<Client, ContainerdError>;
}

/// containerd's API socket, in one namespace.
#[derive(Debug, Clone)]
pub struct Socket {
    /// The socket.
    pub address: PathBuf,
    /// The namespace every call is made in.
    pub namespace: String,
    /// How long one attempt waits for the socket.
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl Connector for Socket {
    async fn connect(&self) -> Result<Client, ContainerdError> {
        Grpc::client(&self.address, &self.namespace, self.timeout).await
    }
}

/// How long to wait for containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// One attempt (`airlift import`): containerd away is an error to report.
    Once,
    /// Until containerd answers or the work is cancelled (the daemon); an import that containerd
    /// fails midway is tried again.
    Wait,
}

/// The first wait between attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A way to containerd, with the patience to use it.
pub struct Connection {
    connector: Box<dyn Connector>,
    patience: Patience,
    /// Whether the last attempt (or the work since) found containerd answering.
    connected: AtomicBool,
    /// Set when the work is abandoned (shutdown): waiting stops.
    cancel: Arc<AtomicBool>,
}

impl Connection {
    /// A connection through `connector`, waiting as `patience` says until `cancel` is set.
    pub fn new(
        connector: Box<dyn Connector>,
        patience: Patience,
        cancel: Arc<AtomicBool>,
    ) -> Connection {
        Connection {
            connector,
            patience,
            connected: AtomicBool::new(false),
            cancel,
        }
    }

    /// How patient it is.
    pub fn patience(&self) -> Patience {
        self.patience
    }

    /// Whether the work is abandoned.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Whether containerd answered the last attempt (and has not failed since).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Notes that containerd failed a call: the next [`Connection::wait`] looks again.
    pub fn lost(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    /// One attempt at the socket, for a caller that handles containerd's answers itself
    /// (`airlift import`, the registry endpoint, `wait --image`).
    pub async fn connect(&self) -> Result<Client, ContainerdError> {
        self.connector.connect().await
    }

    /// One attempt, counted only when containerd's introspection answers too (a socket that
    /// accepts while containerd still loads its plugins does not count).
    async fn answered(&self) -> Result<Client, ContainerdError> {
        let c = self.connector.connect().await?;
        c.content_root().await?;
        Ok(c)
    }

    /// A connection: with [`Patience::Wait`], attempts (logged, with backoff) until containerd
    /// answers or the work is cancelled; with [`Patience::Once`], one attempt.
    pub async fn wait(&self) -> Result<Client, Abandoned> {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            if self.cancelled() {
                return Err(Abandoned::Cancelled);
            }
            match self.answered().await {
                Ok(c) => {
                    if !self.connected.swap(true, Ordering::Relaxed) && attempt > 0 {
                        tracing::info!("containerd is reachable");
                    }
                    return Ok(c);
                }
                Err(e) => {
                    self.lost();
                    if self.patience == Patience::Once {
                        return Err(Abandoned::Unreachable(e));
                    }
                    if attempt == 0 || attempt.is_power_of_two() {
                        tracing::warn!(error = %e, retry_in = ?delay, "waiting for containerd");
                    }
                }
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// Why no connection was had.
#[derive(Debug, thiserror::Error)]
pub enum Abandoned {
    /// The work was cancelled while waiting (shutdown).
    #[error("abandoned: shutting down")]
    Cancelled,
    /// containerd did not answer the one attempt.
    #[error(transparent)]
    Unreachable(ContainerdError),
}
