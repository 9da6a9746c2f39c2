//! The archive side of the journey: decode → walk → understand. Nothing here talks to containerd.

pub mod decode;
pub mod readahead;
pub mod spill;
pub mod understand;
pub mod walk;
