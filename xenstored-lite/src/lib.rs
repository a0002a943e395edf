//! Filled by a later step of the roadmap (see the workspace README).
