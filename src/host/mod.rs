//! What the daemons and `local` share about the host they run on: process identity and spawning
//! ([`process`]), what /proc says about a process ([`procfs`]), the TCP socket tables ([`sockets`]) and resetting
//! sockets through netlink ([`sockdiag`]), owner-only secret files ([`secret`]), `unix:`/`tcp:` endpoints
//! ([`endpoint`]) and the wall clock the parts exchange ([`clock`]). Nothing here knows about Flink or about the
//! parts that use it.

pub mod clock;
pub mod endpoint;
pub mod process;
pub mod procfs;
pub mod secret;
pub mod sockdiag;
pub mod sockets;
