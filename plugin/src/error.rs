//! Error classes: containerd's (`errdefs`), the one mapping between them and gRPC status codes,
//! and the one way airlift prints a chain of causes.
//!
//! Every error type of the crate that crosses a socket says which [`Class`] it belongs to;
//! [`Class::of_code`] and [`Class::code`] are the only places gRPC codes are interpreted or made.

use tonic::Code;

/// A value that is none of the names it may be (`--mode fast`, `log_format = "xml"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected {expected}")]
pub struct UnknownName {
    /// What was named (`mode`).
    pub what: &'static str,
    /// The value given.
    pub value: String,
    /// The names it may be, in words (`auto, direct or stream`).
    pub expected: &'static str,
}

impl UnknownName {
    /// `value` is not a `what`: it may be `expected`.
    pub fn new(what: &'static str, value: &str, expected: &'static str) -> UnknownName {
        UnknownName {
            what,
            value: value.to_string(),
            expected,
        }
    }
}

/// containerd's error classes, as carried by gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The request contradicts the state (a size or digest mismatch at commit).
    FailedPrecondition,
    /// Locked, busy or not reachable: trying again may succeed.
    Unavailable,
    /// The request is malformed.
    InvalidArgument,
    /// An offset outside the object (a write away from the ingest's offset, a read past the end).
    OutOfRange,
    /// The operation is not supported.
    NotImplemented,
    /// Anything else: the server failed.
    Internal,
}

impl Class {
    /// The class a gRPC code stands for.
    pub fn of_code(code: Code) -> Class {
        match code {
            Code::NotFound => Class::NotFound,
            Code::AlreadyExists => Class::AlreadyExists,
            Code::FailedPrecondition => Class::FailedPrecondition,
            Code::Unavailable | Code::Aborted | Code::ResourceExhausted => Class::Unavailable,
            Code::InvalidArgument => Class::InvalidArgument,
            Code::OutOfRange => Class::OutOfRange,
            Code::Unimplemented => Class::NotImplemented,
            _ => Class::Internal,
        }
    }

    /// The class of a gRPC status.
    pub fn of_status(status: &tonic::Status) -> Class {
        Class::of_code(status.code())
    }

    /// The gRPC code containerd uses for the class.
    pub fn code(self) -> Code {
        match self {
            Class::NotFound => Code::NotFound,
            Class::AlreadyExists => Code::AlreadyExists,
            Class::FailedPrecondition => Code::FailedPrecondition,
            Class::Unavailable => Code::Unavailable,
            Class::InvalidArgument => Code::InvalidArgument,
            Class::OutOfRange => Code::OutOfRange,
            Class::NotImplemented => Code::Unimplemented,
            Class::Internal => Code::Internal,
        }
    }

    /// A gRPC status of this class.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.code(), message)
    }
}

/// An error and its causes, each said once: a cause whose text the message already contains
/// (transport errors repeat their source) is left out.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_classes() {
        for class in [
            Class::NotFound,
            Class::AlreadyExists,
            Class::FailedPrecondition,
            Class::Unavailable,
            Class::InvalidArgument,
            Class::OutOfRange,
            Class::NotImplemented,
            Class::Internal,
        ] {
            assert_eq!(Class::of_code(class.code()), class);
            assert_eq!(Class::of_status(&class.status("x")), class);
        }
        assert_eq!(Class::of_code(Code::Unknown), Class::Internal);
        assert_eq!(Class::of_code(Code::Aborted), Class::Unavailable);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("transport error: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let outer = Outer(io);
        assert_eq!(chain(&outer), "transport error: No such file or directory");
        #[derive(Debug, thiserror::Error)]
        #[error("connecting")]
        struct Plain(#[source] std::io::Error);
        let plain = Plain(std::io::Error::other("refused"));
        assert_eq!(chain(&plain), "connecting: refused");
    }
}
