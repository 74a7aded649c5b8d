//! Placeholder: see the project's issues.
