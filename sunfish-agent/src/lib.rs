//! # sunfish-agent
//!
//! The Sunfish agent: serves one device's Redfish tree with `sunfish-core`, registers with an
//! upstream Sunfish service and forwards changes to a hardware manager. This crate is a
//! placeholder in the Foundation; the agent issue fills it.
