//! Integration tests of Sunlight; see `tests/`.
