//! Networks of `zerostate` processes on one machine: the devnet, the benches that measure
//! the system across real processes, and the chaos suite, on one typed harness that the
//! multi-process tests use too.

pub mod bench;
pub mod chaos;
pub mod devnet;
pub mod harness;
