//! Replicated metadata, the IO half: small versioned records (buckets, objects, uploads,
//! parts, the collector's blob marks and the native API's holds) kept beside the blobs and
//! placed by the same zone-aware placement. Keys, stamps and merge rules are `cairn_core::meta`; each owner's records live in
//! redb (`crate::local::meta_store`).
//!
//! - Writes go to every owner and succeed at the layout's write quorum; reads ask every owner
//!   and answer once a read quorum has, taking the highest stamp, so a read always meets the
//!   latest acknowledged write ([`cluster`]).
//! - Owners that missed a write catch up by read repair and by a periodic exchange of
//!   partition digests ([`sync`]).

pub mod cluster;
pub mod marks;
pub mod sync;
