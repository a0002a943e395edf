//! End-to-end scenarios live in `tests/tests/`; this library holds shared helpers.
