//! Nothing to link: the browser tests are in `tests/`.
