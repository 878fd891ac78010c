//! One module per subcommand group, each a clap struct with `run(self)`.

pub mod node;
pub mod receipt;
pub mod task;
