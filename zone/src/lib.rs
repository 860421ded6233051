//! The skerry zone runtime.
