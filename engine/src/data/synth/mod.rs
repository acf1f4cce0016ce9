//! A procedural dataset of small creatures with ground-truth keypoints, in SPair-71k's layout,
//! to train diffscope's default pixel-space diffusion model and to measure correspondence on
//! it the way DIFT does on SPair-71k.
//!
//! # What is drawn
//! Four categories, each with eight named parts (keypoint ids are per category, as in SPair):
//!
//! | category | view | keypoints (id order) |
//! |---|---|---|
//! | `cat`  | front | left_eye, right_eye, nose, left_ear, right_ear, tail, left_foot, right_foot |
//! | `bird` | front (an owl) | left_eye, right_eye, nose (beak), left_wing, right_wing, tail, left_foot, right_foot |
//! | `fish` | side | left_eye, right_eye, nose (mouth), dorsal_fin, belly_fin, tail, left_fin, right_fin |
//! | `bug`  | top (a beetle) | left_eye, right_eye, left_antenna, right_antenna, left_wing, right_wing, left_foot, right_foot |
//!
//! Parts look like what they are: every eye is a light disc with a dark round pupil (the
//! keypoint is the pupil's centre), ears are triangles with a pink inner triangle, noses and
//! beaks small triangles, feet small ovals, a cat's tail a thick curve (keypoint at the tip),
//! wings long ovals or the two halves of a beetle's shell, antennae thin curves ending in a ball.
//!
//! Left and right are the creature's own (see [`creatures`] for each view): a front-facing
//! cat's left eye is on the viewer's right; a beetle seen from above has its left on the image's
//! left; a fish facing right shows its right flank, and its left eye and left fin are hidden
//! (annotated invisible). Mirroring an image swaps which drawn part is called left.
//!
//! Per instance, at random: proportions (head, body, ear, eye, tail, leg sizes), colours, a coat
//! (plain, stripes or spots), mirror (half the time), rotation (up to 20 degrees either way),
//! scale (the creature fills 55-90% of the image), position (one image in eight may cut the
//! creature at the border), and one in five has an occluder (a leaf or a stone) over some part.
//! Backgrounds are linear or radial gradients, overlaid with value noise, stripes, a checker
//! board, dots or nothing, in colours that contrast with the creature's body.
//!
//! Shapes (ellipses, polygons, round-ended thick segments) are filled with hard edges on a grid
//! 4x finer than the image and averaged (16 samples per pixel), which anti-aliases them and
//! gives an exact part mask. A keypoint is visible when it is in the frame, not on the far side
//! of the creature, and the topmost shape at its exact position is its own part.
//!
//! Determinism: image `i` comes from ChaCha8 stream `i` of the seed (pairs from stream
//! `u64::MAX`), and all geometry uses correctly rounded arithmetic only (our own sin/cos), so a
//! seed gives the same bytes on every machine; image `i` does not depend on `--count`.
//!
//! # On disk (SPair-71k's layout; one loader, [`crate::data::spair`], reads both)
//! - `JPEGImages/<category>/<name>.jpg` (or `.png` when asked; the annotations name the file, so
//!   the loader takes either), `<name>` = `syn<seed>_<index:06>`.
//! - `ImageAnnotation/<category>/<name>.json`: SPair's fields `filename`, `src_database`,
//!   `src_annotation`, `src_image`, `image_width`, `image_height`, `image_depth`, `category`,
//!   `pose` (VOC's words), `truncated`, `occluded`, `difficult`, `bndbox` [x1,y1,x2,y2],
//!   `kps` (keypoint id string -> [x, y] or null when invisible; every id of the category is
//!   present), `azimuth_id` (ours: 0 front/top, 2 facing right, 6 facing left), plus `synth`
//!   (seed, index, mirror, rotation_deg, scale_px_per_unit).
//! - `PairAnnotation/<split>/<pair_id:06>-<src>-<trg>:<category>.json`: SPair's `pair_id`,
//!   `src_imname`, `trg_imname`, `src_imsize` and `trg_imsize` ([width, height, 3]),
//!   `src_bndbox`, `trg_bndbox`, `category`, `src_kps` and `trg_kps` (lists of [x, y] paired by
//!   index: the keypoints visible in both), `kps_ids` (their ids, strings), `mirror`,
//!   `viewpoint_variation`, `scale_variation`, `truncation`, `occlusion` (thresholds in
//!   [`writer`]).
//! - `Layout/large/<split>.txt`: the pair names, one a line, as SPair's.
//! - `keypoints.json`: per category the keypoint names by id, the view, and the labels of the
//!   part masks.
//! - `PartMasks/<category>/<name>.png` (not in SPair): 8-bit labels per pixel, 0 background,
//!   1 occluder, 2 body, 3 + id for keypoint part `id`.
//!
//! Coordinates are pixel indices: [0, 0] is the centre of the top-left pixel (as SPair's
//! integer keypoints read), with two decimals; `bndbox` is inclusive pixel indices.

pub mod background;
pub mod color;
pub mod creatures;
pub mod detmath;
pub mod geometry;
pub mod preview;
pub mod raster;
pub mod scene;
pub mod writer;

pub use creatures::{Category, View, PUPIL};
pub use preview::contact_sheet;
pub use scene::{
    render_instance, InstanceAnnotation, Keypoint, Rendered, LABEL_BODY, LABEL_OCCLUDER,
    LABEL_PART0,
};
pub use writer::{generate_dataset, image_stem, ImageFormat, SynthConfig, SynthSummary};
