//! `[api]` settings.
use serde::{Deserialize, Serialize};

/// `[api]`: the HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the HTTP API.
    pub enabled: bool,
    /// Listen address (loopback by default).
    pub listen: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:7070".into(),
        }
    }
}
