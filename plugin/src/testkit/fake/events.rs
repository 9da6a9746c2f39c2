//! The fake's events service: subscriptions by topic, fed as the fake publishes.

use super::Fake;
use crate::containerd::{ContainerdError, Event, Events, Result, Subscriber};
use crate::error::Class;

/// An event's topic.
pub(super) fn topic(event: &Event) -> String {
    match event {
        Event::ImageCreated { .. } => "/images/create".into(),
        Event::ImageUpdated { .. } => "/images/update".into(),
        Event::ImageDeleted { .. } => "/images/delete".into(),
        Event::ContentCreated { .. } => "/content/create".into(),
        Event::Other { topic } => topic.clone(),
    }
}

#[async_trait::async_trait]
impl Subscriber for Fake {
    async fn subscribe(&self, topics: &[&str]) -> Result<Events> {
        self.enter("subscribe", topics.join(","))?;
        let topics = topics
            .iter()
            .map(|t| regex::Regex::new(t))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                ContainerdError::call("subscribe", Class::InvalidArgument, e.to_string())
            })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.state().subscribers.push((topics, tx));
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }
}
