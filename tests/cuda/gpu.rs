//! GPU tests: filled in below.
