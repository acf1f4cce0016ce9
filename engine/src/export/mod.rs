//! Exports: figures as PNG, correspondences as CSV and JSON. Feature dumps are in `features::dump`.

pub mod canvas;
pub mod colormap;
pub mod figure;
pub mod matches;
pub mod plot;
