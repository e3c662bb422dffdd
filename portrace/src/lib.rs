//! portrace: a real-time TCP state tracer. The binary's `main` only parses arguments and
//! calls [`run::run`]; everything else lives in these modules, one concern each.

pub mod record;
pub mod alerts;
pub mod tcp_state;
pub mod cli;
pub mod decode;
pub mod filter;
pub mod loader;
pub mod sockets;
pub mod gaps;
pub mod run;
pub mod btf;
pub mod tracefs;
pub mod preflight;
pub mod clock;
pub mod output;
pub mod summary;
pub mod reasons;
pub mod timeline;
pub mod sock_diag;
pub mod procfs;
pub mod process_info;
pub mod netns_info;
pub mod details;
pub mod inventory;
pub mod tracefile;
pub mod replay;
pub mod report;
pub mod explain;
pub mod diagram;
pub mod command;
pub mod follow;
pub mod still_open;
pub mod top;
pub mod hitcount;
pub mod priority;
