//! Cairn node: one engine behind a QUIC endpoint that replicates blobs to its peers (to come; today only the engine exists).
