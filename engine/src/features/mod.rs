//! Feature extraction: the recipe, tap names, maps.

pub mod map;
pub mod recipe;
