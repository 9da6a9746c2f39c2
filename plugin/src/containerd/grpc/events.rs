//! [`Subscriber`] over containerd's events service.

use super::Grpc;
use crate::containerd::{ContainerdError, Event, Events, Result, Subscriber};
use containerd_client::services::v1 as api;
use containerd_client::services::v1::events_client::EventsClient;

/// Decodes an event envelope by its topic.
fn event(envelope: containerd_client::types::Envelope) -> Event {
    use prost::Message;
    let data = envelope.event.map(|a| a.value).unwrap_or_default();
    let data = data.as_slice();
    let other = || Event::Other {
        topic: envelope.topic.clone(),
    };
    match envelope.topic.as_str() {
        "/images/create" => api::ImageCreate::decode(data).map_or_else(
            |_| other(),
            |e| Event::ImageCreated {
                name: e.name,
                labels: e.labels,
            },
        ),
        "/images/update" => api::ImageUpdate::decode(data).map_or_else(
            |_| other(),
            |e| Event::ImageUpdated {
                name: e.name,
                labels: e.labels,
            },
        ),
        "/images/delete" => api::ImageDelete::decode(data)
            .map_or_else(|_| other(), |e| Event::ImageDeleted { name: e.name }),
        "/content/create" => containerd_client::events::ContentCreate::decode(data)
            .map_or_else(|_| other(), |e| Event::ContentCreated { digest: e.digest }),
        _ => other(),
    }
}

#[async_trait::async_trait]
impl Subscriber for Grpc {
    async fn subscribe(&self, topics: &[&str]) -> Result<Events> {
        // One filter per topic (filters are alternatives); each also names the namespace.
        let filters = topics
            .iter()
            .map(|t| format!("namespace=={:?},topic~={t:?}", self.scope.namespace))
            .collect();
        let request = self.request(api::SubscribeRequest { filters });
        let mut client = EventsClient::new(self.channel.clone());
        // containerd answers a subscription only with its first event (no response headers
        // before): the call runs on a task of its own, and the stream is handed back at once.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let call = async {
                let mut stream = match client.subscribe(request).await {
                    Ok(r) => r.into_inner(),
                    Err(s) => {
                        let e = ContainerdError::from_status("subscribe to events", &s);
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                loop {
                    let next = match stream.message().await {
                        Ok(Some(envelope)) => Ok(event(envelope)),
                        Ok(None) => return,
                        Err(s) => Err(ContainerdError::from_status("receive events", &s)),
                    };
                    let failed = next.is_err();
                    if tx.send(next).await.is_err() || failed {
                        return;
                    }
                }
            };
            // Ends with the subscriber (the receiving side dropped), event or not.
            tokio::select! {
                _ = call => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
