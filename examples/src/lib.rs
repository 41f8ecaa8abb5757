//! Examples of burn-sparse-adam (see `examples/`).
