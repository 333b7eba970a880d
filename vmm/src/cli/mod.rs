//! The command line: arguments, their validation, and the commands.

pub mod args;
