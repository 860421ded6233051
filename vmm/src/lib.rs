//! The skerry VMM.
