//! vmadm: the operator CLI.
