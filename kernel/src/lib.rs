//! # valori-kernel
//!
//! The deterministic state machine behind Valori: a vector store with tags and metadata and a
//! knowledge graph, whose state is a pure function of the ordered events applied to it.
//!
//! - State changes only through [`Kernel::apply`], which validates an [`Event`] completely
//!   before changing anything.
//! - Vectors are Q16.16 fixed point ([`Fixed`]); [`Fixed::from_f32`] is the only way floats get
//!   in, and it is exact. Distances are exact integers ([`distance`]).
//! - Every encoding is canonical little-endian ([`codec`]); the state hash is blake3 of the
//!   canonical state encoding, the chain hash is `blake3(prev || encode(event))`.
//! - [`Kernel::snapshot`] / [`Kernel::restore`] round-trip the state with its hash.
//!
//! ```
//! use valori_kernel::{CollectionSpec, Event, IndexSpec, Kernel, Metric, NewRecord, SearchParams};
//! # fn main() -> Result<(), valori_kernel::Error> {
//! let mut kernel = Kernel::new();
//! kernel.apply(&Event::CreateCollection(CollectionSpec {
//!     name: "docs".into(), dimension: 3, metric: Metric::Cosine, index: IndexSpec::Flat,
//! }))?;
//! let vector = valori_kernel::fixed::vector_from_f32(&[0.1, 0.7, -0.2]).expect("finite, in range");
//! kernel.apply(&Event::Insert {
//!     collection: "docs".into(),
//!     records: vec![NewRecord { vector: vector.clone(), tag: 7, metadata: Some(b"hello".to_vec()) }],
//! })?;
//! let hits = kernel.search("docs", &vector, &SearchParams { k: 5, tag: Some(7), ef: None })?;
//! assert_eq!(hits[0].id, 0);
//! # Ok(()) }
//! ```
//!
//! The crate is `no_std` (with `alloc`): no I/O, no clock, no randomness, no floating-point
//! arithmetic outside [`fixed`].

#![no_std]
#![deny(missing_docs)]
#![deny(clippy::float_arithmetic)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod codec;
pub mod collection;
pub mod compact;
pub mod distance;
pub mod error;
pub mod event;
pub mod exec;
pub mod filter;
pub mod fixed;
pub mod graph;
pub mod hnsw;
pub mod kernel;
pub mod keyed;
pub mod limits;
mod lists;
pub mod payload;
pub mod rows;
pub mod snapshot;
mod vectors;

pub use collection::{Collection, Hit, Record};
pub use error::Error;
pub use event::{
    CollectionSpec, Event, HnswParams, IndexKind, IndexSpec, KeyedRecord, Metric, NewRecord,
    PayloadMode, RecordRef, Target, UpsertMode,
};
pub use exec::{Executor, Sequential};
pub use filter::{Condition, Filter, Match, Range};
pub use fixed::{Fixed, FixedError};
pub use graph::{Direction, Neighbor, Traversal};
pub use hnsw::SearchScratch;
pub use kernel::{chain_next, Applied, Hash, Kernel, Replay, SearchParams, Share, GENESIS_CHAIN};
pub use payload::{Number, Payload, Value};
pub use snapshot::{SnapshotError, SnapshotInfo};
