//! One module per subcommand group, each a clap struct with `run(self)`.

pub mod bench;
pub mod channel;
pub mod chaos;
pub mod collector;
pub mod devnet;
pub mod guild;
pub mod node;
pub mod receipt;
pub mod submit;
pub mod task;
pub mod task_files;
pub mod task_new;
pub mod trace;
