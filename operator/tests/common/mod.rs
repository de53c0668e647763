//! What the operator's integration tests share.
pub mod apiserver;
pub mod cluster;
pub mod node;
