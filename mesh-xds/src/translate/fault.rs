//! Fault filter translation.
