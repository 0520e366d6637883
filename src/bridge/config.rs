//! `[bridge]` settings.
use serde::{Deserialize, Serialize};

/// `[bridge]`: the Kafka bridge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Run the bridge.
    pub enabled: bool,
}
