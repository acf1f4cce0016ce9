//! Feature extraction: the recipe, whole-image extraction, maps, dumps.

pub mod cache;
pub mod dump;
pub mod extract;
pub mod map;
pub mod recipe;
