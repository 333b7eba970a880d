//! The command line: the arguments ([`args`], [`report_args`]), what they
//! accept ([`limits`], [`names`]), their validation into a session's
//! configuration ([`config`]; `top`'s in [`top_args`]), and the commands
//! ([`commands`], [`analyze`]) with their [`exit`] codes.
//!
//! A new command adds its arguments to [`args`] (or a file of its own, as
//! [`top_args`]) and its dispatch to [`commands`].

pub mod analyze;
pub mod arg_limits;
pub mod args;
pub mod commands;
pub mod config;
pub mod exit;
pub mod name_args;
pub mod report_args;
pub mod top_args;
