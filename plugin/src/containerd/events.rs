//! containerd's events service: the image events the daemon follows to repair what others
//! change.

use super::Result;
use std::collections::HashMap;

/// An event containerd published in the handle's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `/images/create`: an image record was created, with these labels.
    ImageCreated {
        /// The image.
        name: String,
        /// Its labels.
        labels: HashMap<String, String>,
    },
    /// `/images/update`: an image record changed; the labels are the whole set after the
    /// change (a removed label is simply absent).
    ImageUpdated {
        /// The image.
        name: String,
        /// Its labels now.
        labels: HashMap<String, String>,
    },
    /// `/images/delete`: an image record was deleted.
    ImageDeleted {
        /// The image.
        name: String,
    },
    /// `/content/create` (containerd 2.1 and later): a blob was committed.
    ContentCreated {
        /// The blob.
        digest: String,
    },
    /// Any other topic.
    Other {
        /// The topic.
        topic: String,
    },
}

impl Event {
    /// The image an image event is about.
    pub fn image(&self) -> Option<&str> {
        match self {
            Event::ImageCreated { name, .. }
            | Event::ImageUpdated { name, .. }
            | Event::ImageDeleted { name } => Some(name),
            _ => None,
        }
    }
}

/// A live subscription: events as containerd publishes them, until the connection ends (a
/// containerd restart ends every subscription: events published meanwhile are lost).
pub type Events = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Event>> + Send>>;

/// The events service.
#[async_trait::async_trait]
pub trait Subscriber: Send + Sync {
    /// Subscribes to the namespace's events whose topic matches one of `topics` (regular
    /// expressions, as in containerd's `topic~=` filter).
    async fn subscribe(&self, topics: &[&str]) -> Result<Events>;
}
