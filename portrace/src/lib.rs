//! portrace: a real-time TCP state tracer. The binary's `main` only parses arguments and
//! calls [`run::run`]; everything else lives in these modules, one concern each.

pub mod record;
pub mod tcp_state;
