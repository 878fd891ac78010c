//! One module per subcommand group, each a clap struct with `run(self)`.

pub mod channel;
pub mod collector;
pub mod guild;
pub mod node;
pub mod reach;
pub mod receipt;
pub mod submit;
pub mod task;
pub mod task_files;
pub mod task_new;
pub mod trace;
