//! The Kafka bridge (DESIGN "Kafka bridge").
pub mod config;
