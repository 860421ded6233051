//! skerry init: the node daemon.
