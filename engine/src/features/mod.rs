//! Feature extraction: the recipe, whole-image extraction, maps, dumps, and attention maps
//! extracted by the same recipe.

pub mod attention;
pub mod batch;
pub mod cache;
pub mod dump;
pub mod extract;
pub mod map;
pub mod recipe;
