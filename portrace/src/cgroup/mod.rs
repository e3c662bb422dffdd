//! Which systemd unit, container or Kubernetes pod a socket's owner runs in.
//!
//! The kernel program reads the owner's cgroup v2 id in the owner's own system call (the
//! same moment it learns the owner) and carries it with every transition of the socket.
//! This module names that id: [`resolve`] finds the cgroup's path under the cgroup2 mount,
//! and [`path`] reads in the path what a person recognises. [`Identity`] is what other
//! parts (outputs, `top`, metric labels) take from it.

pub mod path;
pub mod resolve;

pub use path::{identity, Container, Identity, Runtime};
pub use resolve::{CgroupDir, CgroupError, Hierarchy, Resolver};

pub use crate::record::CgroupInfo;

impl CgroupInfo {
    /// The unit, container and pod the path names (all empty without a path).
    pub fn identity(&self) -> Identity {
        self.path.as_deref().map(identity).unwrap_or_default()
    }
}
