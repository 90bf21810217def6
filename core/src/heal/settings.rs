//! How healing is paced: [`HealSettings`], from the node's configuration, with their defaults
//! and the rules they must follow.

use serde::{Deserialize, Serialize};

use crate::limits::TRANSFERS_IN_FLIGHT_MAX;

/// Default settings; see [`HealSettings`].
pub const ANTI_ENTROPY_INTERVAL_MS_DEFAULT: u64 = 30_000;
pub const HANDOFF_INTERVAL_MS_DEFAULT: u64 = 10_000;
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 24 * 3600 * 1000;
pub const HEAL_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const TRANSFERS_IN_FLIGHT_MAX_DEFAULT: usize = 8;
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 32 * 1024 * 1024;
pub const SCRUB_INTERVAL_MS_DEFAULT: u64 = 24 * 3600 * 1000;

const _: () = assert!(TRANSFERS_IN_FLIGHT_MAX_DEFAULT <= TRANSFERS_IN_FLIGHT_MAX);

/// A setting outside what the healer accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealSettingsError {
    #[error("transfers_in_flight_max is {value}; it must be 1..={TRANSFERS_IN_FLIGHT_MAX}")]
    TransfersInFlight { value: usize },
    #[error("{setting} must be above 0")]
    Zero { setting: &'static str },
}

/// How healing is paced, from the node's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealSettings {
    /// Pause between two anti-entropy sessions with the same peer.
    pub anti_entropy_interval_ms: u64,
    /// Pause between two hand-off passes over the store.
    pub handoff_interval_ms: u64,
    /// How long a tombstone (or a live copy's version) is kept at least.
    pub tombstone_grace_ms: u64,
    /// Copies made by anti-entropy and hand-off share this bandwidth; 0: unlimited.
    pub bandwidth_bytes_per_sec: u64,
    pub transfers_in_flight_max: usize,
    /// A request of a session unanswered for this long ends the session.
    pub request_timeout_ms: u64,
    /// Scrub reads at most this many bytes per second; 0: scrub is off.
    pub scrub_bytes_per_sec: u64,
    /// Pause between the end of one scrub pass and the start of the next.
    pub scrub_interval_ms: u64,
}

impl Default for HealSettings {
    fn default() -> HealSettings {
        HealSettings {
            anti_entropy_interval_ms: ANTI_ENTROPY_INTERVAL_MS_DEFAULT,
            handoff_interval_ms: HANDOFF_INTERVAL_MS_DEFAULT,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS_DEFAULT,
            bandwidth_bytes_per_sec: 0,
            transfers_in_flight_max: TRANSFERS_IN_FLIGHT_MAX_DEFAULT,
            request_timeout_ms: HEAL_REQUEST_TIMEOUT_MS_DEFAULT,
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC_DEFAULT,
            scrub_interval_ms: SCRUB_INTERVAL_MS_DEFAULT,
        }
    }
}

impl HealSettings {
    /// Checks the settings; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), HealSettingsError> {
        if self.transfers_in_flight_max == 0
            || self.transfers_in_flight_max > TRANSFERS_IN_FLIGHT_MAX
        {
            return Err(HealSettingsError::TransfersInFlight {
                value: self.transfers_in_flight_max,
            });
        }
        let positive = [
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms),
            ("handoff_interval_ms", self.handoff_interval_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(HealSettingsError::Zero { setting });
            }
        }
        Ok(())
    }
}
