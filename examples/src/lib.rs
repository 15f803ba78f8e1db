//! Runnable example operators; see the `examples/` directory.
