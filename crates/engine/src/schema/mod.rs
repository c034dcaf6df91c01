//! The schema stage: `anteroom.toml` → [`AppModel`]. [`load`] parses and
//! validates; [`model`] is the typed result every other module reads.

pub mod load;
pub mod model;
pub(crate) mod pattern;
mod plain;
pub mod queue;
pub mod shape;
mod suggest;

pub use load::{SchemaError, SchemaErrors, load_file, load_str};
pub use model::*;
