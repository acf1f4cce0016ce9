//! The diffscope workbench (an egui app over the engine thread); the binary adds the headless CLI.

pub mod gui;
