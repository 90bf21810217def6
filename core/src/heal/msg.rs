//! The healer's messages and actions: what healers say to each other ([`HealMsg`]) and what a
//! healer asks its driver to do ([`Action`]).

use serde::{Deserialize, Serialize};

use super::entry::{BlobHash, Entry, Summary};

/// Messages between healers. Every request carries an id that its reply echoes, and the
/// sender's layout version; a peer on another layout answers `Stale` and the session ends. The
/// first request of a session and its `Done` carry the session's id, every later request a fresh
/// one, so a late or duplicated reply is never taken for the answer to a later request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealMsg {
    Summaries {
        session: u64,
        layout_version: u64,
        prefix_bits: u32,
        prefixes: Vec<u32>,
    },
    SummariesReply {
        session: u64,
        summaries: Vec<Summary>,
    },
    Entries {
        session: u64,
        layout_version: u64,
        prefix_bits: u32,
        prefix: u32,
        after: Option<BlobHash>,
    },
    EntriesReply {
        session: u64,
        entries: Vec<Entry>,
        complete: bool,
    },
    /// Hand-off: "I hold these and you own them". Tombstones among them are applied at once.
    Offer {
        session: u64,
        layout_version: u64,
        entries: Vec<Entry>,
    },
    /// The live entries of the offer that the owner lacks; it holds the others.
    OfferReply {
        session: u64,
        wanted: Vec<BlobHash>,
    },
    /// Tombstones the peer has not seen; applied before the reply.
    Tombstones {
        session: u64,
        layout_version: u64,
        entries: Vec<Entry>,
    },
    TombstonesReply {
        session: u64,
    },
    /// The initiator's session ended with every difference resolved: the responder now knows
    /// the initiator has seen everything it held when the session began.
    Done {
        session: u64,
    },
    /// The request's layout version differs from this node's.
    Stale {
        session: u64,
        layout_version: u64,
    },
}

impl HealMsg {
    /// The id a message carries (see [`HealMsg`]).
    pub fn session(&self) -> u64 {
        match self {
            HealMsg::Summaries { session, .. }
            | HealMsg::SummariesReply { session, .. }
            | HealMsg::Entries { session, .. }
            | HealMsg::EntriesReply { session, .. }
            | HealMsg::Offer { session, .. }
            | HealMsg::OfferReply { session, .. }
            | HealMsg::Tombstones { session, .. }
            | HealMsg::TombstonesReply { session }
            | HealMsg::Done { session }
            | HealMsg::Stale { session, .. } => *session,
        }
    }

    /// The sender's layout version, carried by every request.
    pub fn layout_version(&self) -> Option<u64> {
        match self {
            HealMsg::Summaries { layout_version, .. }
            | HealMsg::Entries { layout_version, .. }
            | HealMsg::Offer { layout_version, .. }
            | HealMsg::Tombstones { layout_version, .. } => Some(*layout_version),
            _ => None,
        }
    }

    /// Whether a message starts an exchange (the peer answers it) or answers one.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            HealMsg::Summaries { .. }
                | HealMsg::Entries { .. }
                | HealMsg::Offer { .. }
                | HealMsg::Tombstones { .. }
        )
    }
}

/// Direction of a blob copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Copy the local blob to the peer, which stores it durably.
    Push,
    /// Copy the peer's blob here: verify its hash, store it durably.
    Fetch,
}

/// What the healer asks its driver to do. Actions are carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: String,
        msg: HealMsg,
    },
    /// Copy a blob; report the outcome with [`Healer::on_transfer_done`].
    Transfer {
        id: u64,
        peer: String,
        direction: Direction,
        entry: Entry,
    },
    /// Record the tombstone durably (and drop the local copy) if it stands over the local entry.
    /// It may be synced later, but before any later `Send` leaves: peers count a session's
    /// answers as what this node holds and purge their tombstones on that basis, so a crash
    /// must not take back a tombstone the peer was already told about.
    ApplyTombstone {
        entry: Entry,
    },
    /// Drop the local copy or tombstone of a hash this node no longer owns; its owners hold it.
    DropLocal {
        hash: BlobHash,
    },
    /// Forget the entry's version: purge a tombstone, or keep a live copy as version 0.
    ForgetVersion {
        entry: Entry,
    },
}
