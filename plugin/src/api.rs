//! airlift's own API (`proto/airlift/v1/airlift.proto`): the generated types, and the client side
//! that `airlift status`, `ls`, `wait`, `forget` and `import --daemon` use (the server is the
//! daemon's, [`crate::daemon::server`]).

use crate::error::Class;
use std::path::{Path, PathBuf};

/// Generated from `proto/airlift/v1/airlift.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("airlift.v1");
}

/// A client of the API.
pub type ApiClient = proto::airlift_client::AirliftClient<tonic::transport::Channel>;

/// Why the API cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answers on the socket.
    #[error(
        "cannot reach the airlift daemon at {}: {}",
        crate::escape::shown(socket),
        crate::error::chain(cause)
    )]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// Why (its causes said once in the message).
        cause: tonic::transport::Error,
    },
}

impl ApiError {
    /// containerd's error class: a daemon that does not answer is [`Class::Unavailable`].
    pub fn class(&self) -> Class {
        match self {
            ApiError::Unreachable { .. } => Class::Unavailable,
        }
    }
}

/// Connects to the daemon's API socket.
pub async fn connect(socket: &Path) -> Result<ApiClient, ApiError> {
    containerd_client::connect(socket)
        .await
        .map(proto::airlift_client::AirliftClient::new)
        .map_err(|cause| ApiError::Unreachable {
            socket: socket.to_path_buf(),
            cause,
        })
}

/// The state name users see.
pub fn state_name(s: i32) -> &'static str {
    match proto::ArchiveState::try_from(s).unwrap_or(proto::ArchiveState::Unspecified) {
        proto::ArchiveState::Pending => "pending",
        proto::ArchiveState::Importing => "importing",
        proto::ArchiveState::Imported => "imported",
        proto::ArchiveState::Failed => "failed",
        proto::ArchiveState::Restoring => "restoring",
        proto::ArchiveState::Ignored => "ignored",
        proto::ArchiveState::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_the_names_users_see() {
        for (s, name) in [
            (proto::ArchiveState::Pending, "pending"),
            (proto::ArchiveState::Importing, "importing"),
            (proto::ArchiveState::Imported, "imported"),
            (proto::ArchiveState::Failed, "failed"),
            (proto::ArchiveState::Restoring, "restoring"),
        ] {
            assert_eq!(state_name(s as i32), name);
        }
        assert_eq!(state_name(99), "unknown");
    }

    #[tokio::test]
    async fn an_absent_daemon_is_named_with_its_socket_and_one_cause() {
        let e = connect(Path::new("/nonexistent/airlift.sock"))
            .await
            .unwrap_err();
        assert_eq!(e.class(), Class::Unavailable);
        let e = e.to_string();
        assert!(e.contains("/nonexistent/airlift.sock"), "{e}");
        assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    }
}
