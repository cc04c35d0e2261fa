//! The client side of the agent protocol (work in progress).
