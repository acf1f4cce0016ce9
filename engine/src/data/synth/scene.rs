//! One image: a random creature posed on a random background, sometimes partly hidden by an
//! occluder (a leaf or a stone) or cut by the image border, with its annotation.

use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::background::Background;
use super::color::hsv;
use super::creatures::{Category, Creature, Owner};
use super::detmath::sin_cos;
use super::geometry::{ellipse, pt, ImageShape, Pose, Shape};
use super::raster::{Canvas, Paint};

/// Labels of the part mask: background, occluder, creature body, then part `k` at `PART0 + k`.
pub const LABEL_BACKGROUND: u8 = 0;
pub const LABEL_OCCLUDER: u8 = 1;
pub const LABEL_BODY: u8 = 2;
pub const LABEL_PART0: u8 = 3;

/// Samples per pixel side: 4 x 4 = 16 samples per pixel.
pub const SUPERSAMPLE: usize = 4;

/// A keypoint in pixel-index coordinates: the centre of the top-left pixel is (0, 0), so a
/// keypoint at (3, 5) is on pixel column 3, row 5 (as SPair's integer annotations read).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keypoint {
    pub x: f64,
    pub y: f64,
    /// Within the frame (pixel-index coordinates in [0, size - 1]), on a drawn part, and not
    /// covered by anything drawn after it.
    pub visible: bool,
}

/// The annotation of one image.
#[derive(Clone, Debug)]
pub struct InstanceAnnotation {
    pub category: Category,
    /// One per part id of the category, in the image (after mirroring: `keypoints[i]` is always
    /// the part named `category.parts()[i]`).
    pub keypoints: Vec<Keypoint>,
    /// [x1, y1, x2, y2]: first and last pixel columns and rows the creature covers (inclusive).
    pub bndbox: [u32; 4],
    pub mirror: bool,
    /// Degrees, clockwise on screen.
    pub rotation_deg: f64,
    /// Pixels per local unit (the creature spans about 2 units).
    pub scale: f64,
    /// Part of the creature lies outside the image.
    pub truncated: bool,
    /// The occluder covers part of the creature.
    pub occluded: bool,
}

/// An image, its part mask and its annotation.
pub struct Rendered {
    pub image: RgbImage,
    /// Per pixel, the label covering most of it (see `LABEL_*`).
    pub labels: GrayImage,
    pub annotation: InstanceAnnotation,
    /// The supersampled canvas, for checks at sub-pixel precision.
    pub canvas: Canvas,
}

impl Rendered {
    /// The supersampled label at a keypoint (pixel-index coordinates).
    pub fn label_at_keypoint(&self, k: &Keypoint) -> Option<u8> {
        self.canvas.label_at(pt(k.x + 0.5, k.y + 0.5))
    }
}

/// Image `index` of the dataset with `seed`: the same arguments give the same bytes on every
/// machine (ChaCha8 stream `index` of `seed`, and only correctly rounded arithmetic).
pub fn render_instance(seed: u64, index: u64, category: Category, size: u32) -> Rendered {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    // Rarely a pose hides every keypoint (say, a creature mostly out of frame): draw again.
    let mut last = None;
    for _ in 0..20 {
        let rendered = render_once(&mut rng, category, size);
        if rendered
            .annotation
            .keypoints
            .iter()
            .filter(|k| k.visible)
            .count()
            >= 2
        {
            return rendered;
        }
        last = Some(rendered);
    }
    last.unwrap_or_else(|| render_once(&mut rng, category, size))
}

struct Occluder {
    shape: Shape,
    paint: Paint,
}

fn render_once(rng: &mut ChaCha8Rng, category: Category, size: u32) -> Rendered {
    let creature = Creature::random(category, rng);
    let pose = random_pose(rng, &creature, size as f64);
    let background = Background::random(rng, creature.body_color);
    let occluder = rng
        .random_bool(0.2)
        .then(|| random_occluder(rng, &creature));
    compose(&creature, &pose, &background, occluder.as_ref(), size)
}

/// Draw a posed creature over a background (and the occluder, if any) and annotate it.
fn compose(
    creature: &Creature,
    pose: &Pose,
    background: &Background,
    occluder: Option<&Occluder>,
    size: u32,
) -> Rendered {
    let category = creature.category;
    let mut canvas = Canvas::new(size as usize, SUPERSAMPLE);
    let side = size as f64;
    canvas.fill(|p| background.color_at(p, side));

    let label_of = |owner: Owner| match owner {
        Owner::Body => LABEL_BODY,
        Owner::Part(id) => {
            let id = if pose.mirror {
                category.mirror_part(id)
            } else {
                id
            };
            LABEL_PART0 + id as u8
        }
    };
    // Shapes in the image, topmost last, each with its label.
    let mut placed: Vec<(ImageShape, u8)> = Vec::with_capacity(creature.items.len() + 1);
    for item in &creature.items {
        let shape = item.shape.to_image(pose);
        let label = label_of(item.owner);
        canvas.draw(&shape, &item.paint, pose, label);
        placed.push((shape, label));
    }
    let is_creature = |l: u8| l >= LABEL_BODY;
    let mut occluded = false;
    if let Some(o) = occluder {
        let before = canvas.count_labels(is_creature);
        let shape = o.shape.to_image(pose);
        canvas.draw(&shape, &o.paint, pose, LABEL_OCCLUDER);
        occluded = canvas.count_labels(is_creature) < before;
        placed.push((shape, LABEL_OCCLUDER));
    }

    let keypoints = keypoints_in_image(creature, pose, &placed, side);
    let truncated = placed
        .iter()
        .filter(|(_, l)| is_creature(*l))
        .any(|(shape, _)| {
            let (lo, hi) = shape.bounds();
            lo.x < 0.0 || lo.y < 0.0 || hi.x > side || hi.y > side
        });
    let bndbox = canvas
        .label_bounds(is_creature)
        .map(|(lo, hi)| {
            let last = size.saturating_sub(1) as f64;
            let clamp = |v: f64| v.clamp(0.0, last) as u32;
            [
                clamp(lo.x.floor()),
                clamp(lo.y.floor()),
                clamp(hi.x.ceil() - 1.0),
                clamp(hi.y.ceil() - 1.0),
            ]
        })
        .unwrap_or([0, 0, 0, 0]);

    let annotation = InstanceAnnotation {
        category,
        keypoints,
        bndbox,
        mirror: pose.mirror,
        rotation_deg: pose.rotation.to_degrees(),
        scale: pose.scale,
        truncated,
        occluded,
    };
    Rendered {
        image: canvas.to_image(),
        labels: canvas.label_image(),
        annotation,
        canvas,
    }
}

/// Mirror half the time, turn up to 20 degrees, scale so the creature fills 55-90% of the image,
/// and place it inside the frame, or (one time in eight) anywhere, which may cut it.
fn random_pose(rng: &mut impl Rng, creature: &Creature, size: f64) -> Pose {
    let mirror = rng.random_bool(0.5);
    let rotation = rng.random_range(-0.35..0.35);
    let largest = creature.half_extent.x.max(creature.half_extent.y);
    let scale = size * rng.random_range(0.28..0.45) / largest;
    // Half extents of the turned box around the creature, in pixels.
    let (s, c) = sin_cos(rotation);
    let (s, c) = (s.abs(), c.abs());
    let (hw, hh) = (
        creature.half_extent.x * scale,
        creature.half_extent.y * scale,
    );
    let (ex, ey) = (hw * c + hh * s, hw * s + hh * c);
    let center = if rng.random_bool(0.125) {
        pt(
            rng.random_range(0.15..0.85) * size,
            rng.random_range(0.15..0.85) * size,
        )
    } else {
        pt(inside_frame(rng, ex, size), inside_frame(rng, ey, size))
    };
    Pose::new(center, scale, rotation, mirror)
}

/// A centre coordinate keeping `extent` pixels on both sides inside [0, size].
fn inside_frame(rng: &mut impl Rng, extent: f64, size: f64) -> f64 {
    if extent * 2.0 >= size {
        size / 2.0
    } else {
        rng.random_range(extent..size - extent)
    }
}

/// A leaf (green ellipse) or a stone (grey-brown polygon) over some part of the creature.
fn random_occluder(rng: &mut impl Rng, creature: &Creature) -> Occluder {
    let target = creature.keypoints[rng.random_range(0..creature.keypoints.len())].at;
    let (s, c) = sin_cos(rng.random_range(0.0..std::f64::consts::TAU));
    let center = target.plus(pt(c, s).scale(rng.random_range(0.15..0.45)));
    let r = rng.random_range(0.22..0.4);
    if rng.random_bool(0.5) {
        let color = hsv(
            rng.random_range(0.22f32..0.4),
            rng.random_range(0.4f32..0.8),
            rng.random_range(0.3f32..0.75),
        );
        let shape = ellipse(
            center,
            r * 1.5,
            r * 0.7,
            rng.random_range(0.0..std::f64::consts::PI),
        );
        Occluder {
            shape,
            paint: Paint::Solid(color),
        }
    } else {
        let color = hsv(
            rng.random_range(0.05f32..0.12),
            rng.random_range(0.05f32..0.3),
            rng.random_range(0.35f32..0.7),
        );
        let n = rng.random_range(5u32..8);
        let points = (0..n)
            .map(|i| {
                let (s, c) = sin_cos(std::f64::consts::TAU * i as f64 / n as f64);
                let k = r * rng.random_range(0.75..1.15);
                center.plus(pt(c * k, s * k))
            })
            .collect();
        Occluder {
            shape: Shape::Polygon(points),
            paint: Paint::Solid(color),
        }
    }
}

/// Place the keypoints and decide visibility geometrically: a keypoint is visible when it is in
/// the frame, not on the far side, and the topmost shape at its exact position is its own part.
fn keypoints_in_image(
    creature: &Creature,
    pose: &Pose,
    placed: &[(ImageShape, u8)],
    size: f64,
) -> Vec<Keypoint> {
    let category = creature.category;
    let mut out = vec![
        Keypoint {
            x: 0.0,
            y: 0.0,
            visible: false
        };
        creature.keypoints.len()
    ];
    for (id, local) in creature.keypoints.iter().enumerate() {
        let image_id = if pose.mirror {
            category.mirror_part(id)
        } else {
            id
        };
        let p = pose.to_image(local.at);
        // Within the outermost pixel centres, so pixel-index coordinates lie in [0, size - 1].
        let in_frame = p.x >= 0.5 && p.y >= 0.5 && p.x <= size - 0.5 && p.y <= size - 0.5;
        let top = placed
            .iter()
            .rev()
            .find(|(shape, _)| shape.contains(p))
            .map(|(_, l)| *l);
        let visible = !local.hidden && in_frame && top == Some(LABEL_PART0 + image_id as u8);
        if let Some(slot) = out.get_mut(image_id) {
            *slot = Keypoint {
                x: p.x - 0.5,
                y: p.y - 0.5,
                visible,
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::color::Rgb;
    use crate::data::synth::creatures::PUPIL;

    fn id(category: Category, name: &str) -> usize {
        category.part_id(name).unwrap()
    }

    /// The creature in the middle of a plain image, nothing over it.
    fn centred(category: Category, seed: u64, mirror: bool, rotation: f64) -> Rendered {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let creature = Creature::random(category, &mut rng);
        let largest = creature.half_extent.x.max(creature.half_extent.y);
        let pose = Pose::new(pt(48.0, 48.0), 40.0 / largest, rotation, mirror);
        compose(
            &creature,
            &pose,
            &Background::plain(Rgb(0.5, 0.5, 0.5)),
            None,
            96,
        )
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        for category in Category::ALL {
            let a = render_instance(11, 5, category, 64);
            let b = render_instance(11, 5, category, 64);
            assert_eq!(a.image.as_raw(), b.image.as_raw());
            assert_eq!(a.labels.as_raw(), b.labels.as_raw());
            assert_eq!(a.annotation.keypoints, b.annotation.keypoints);
            let c = render_instance(12, 5, category, 64);
            assert_ne!(a.image.as_raw(), c.image.as_raw());
            let d = render_instance(11, 6, category, 64);
            assert_ne!(a.image.as_raw(), d.image.as_raw());
        }
    }

    /// With nothing in the way, every keypoint that is not on the far side is visible: each
    /// lies on its own part and no other part covers it, for any mirror and turn.
    #[test]
    fn unobstructed_keypoints_are_all_on_their_parts() {
        for category in Category::ALL {
            for seed in 0..24u64 {
                let mirror = seed % 2 == 1;
                let rotation = (seed as f64 / 24.0 - 0.5) * 0.7;
                let r = centred(category, seed, mirror, rotation);
                for (i, k) in r.annotation.keypoints.iter().enumerate() {
                    let name = category.parts()[i];
                    // Facing right (not mirrored) hides the left parts; mirrored, the right ones.
                    let hidden_side = if mirror { "right_" } else { "left_" };
                    let far_side = category.view() == View::Side && name.starts_with(hidden_side);
                    assert_eq!(
                        k.visible,
                        !far_side,
                        "{} seed {seed}: {name}",
                        category.name()
                    );
                    if k.visible {
                        assert_eq!(
                            r.label_at_keypoint(k),
                            Some(LABEL_PART0 + i as u8),
                            "{name}"
                        );
                    }
                }
            }
        }
    }

    use crate::data::synth::creatures::View;

    /// Left and right are the creature's own: front views keep the left eye on the viewer's
    /// right whether mirrored or not, top views keep it on the viewer's left, and a side view
    /// shows the right eye when facing right and the left eye when facing left.
    #[test]
    fn left_and_right_follow_the_creatures_own_frame() {
        for mirror in [false, true] {
            for category in [Category::Cat, Category::Bird] {
                let k = centred(category, 3, mirror, 0.0).annotation.keypoints;
                let (l, r) = (k[id(category, "left_eye")], k[id(category, "right_eye")]);
                assert!(
                    l.x > r.x,
                    "{} mirror {mirror}: left eye at {l:?}, right at {r:?}",
                    category.name()
                );
                let (lf, rf) = (k[id(category, "left_foot")], k[id(category, "right_foot")]);
                assert!(lf.x > rf.x);
            }
            let bug = centred(Category::Bug, 3, mirror, 0.0).annotation.keypoints;
            assert!(bug[id(Category::Bug, "left_eye")].x < bug[id(Category::Bug, "right_eye")].x);
            assert!(
                bug[id(Category::Bug, "left_antenna")].x
                    < bug[id(Category::Bug, "right_antenna")].x
            );

            let fish = centred(Category::Fish, 3, mirror, 0.0).annotation.keypoints;
            let (nose, tail) = (
                fish[id(Category::Fish, "nose")],
                fish[id(Category::Fish, "tail")],
            );
            let faces_right = nose.x > tail.x;
            assert_eq!(faces_right, !mirror);
            assert_eq!(fish[id(Category::Fish, "right_eye")].visible, faces_right);
            assert_eq!(fish[id(Category::Fish, "left_eye")].visible, !faces_right);
            assert_eq!(fish[id(Category::Fish, "right_fin")].visible, faces_right);
        }
    }

    /// On the dataset's own random images (backgrounds, occluders, cut-offs): every visible
    /// keypoint's sample is its part; invisible in-frame keypoints are not on their part; the
    /// pixel under a keypoint is mostly its part; eye keypoints show the pupil's colour.
    #[test]
    fn keypoints_land_on_their_parts_in_random_images() {
        let (mut visible, mut majority_ok, mut eyes, mut dark_eyes) = (0, 0, 0, 0);
        let (mut hidden_by_something, mut occluded_images, mut truncated_images) = (0, 0, 0);
        let pupil = PUPIL.to_u8();
        for index in 0..160u64 {
            let category = Category::ALL[index as usize % 4];
            let r = render_instance(2024, index, category, 64);
            occluded_images += usize::from(r.annotation.occluded);
            truncated_images += usize::from(r.annotation.truncated);
            let [x1, y1, x2, y2] = r.annotation.bndbox;
            for (i, k) in r.annotation.keypoints.iter().enumerate() {
                let label = LABEL_PART0 + i as u8;
                let in_frame = k.x >= 0.0 && k.y >= 0.0 && k.x <= 63.0 && k.y <= 63.0;
                if !k.visible {
                    if in_frame && r.label_at_keypoint(k) != Some(label) {
                        hidden_by_something += 1;
                    }
                    continue;
                }
                visible += 1;
                assert!(
                    k.x >= 0.0 && k.y >= 0.0 && k.x <= 63.0 && k.y <= 63.0,
                    "{k:?}"
                );
                assert_eq!(
                    r.label_at_keypoint(k),
                    Some(label),
                    "image {index} {}",
                    category.parts()[i]
                );
                let (px, py) = ((k.x + 0.5).floor() as u32, (k.y + 0.5).floor() as u32);
                assert!(
                    px >= x1 && px <= x2 && py >= y1 && py <= y2,
                    "keypoint outside the box"
                );
                majority_ok += usize::from(r.labels.get_pixel(px, py).0[0] == label);
                if category.parts()[i].ends_with("_eye") {
                    eyes += 1;
                    let p = r.image.get_pixel(px, py).0;
                    let dist = (0..3)
                        .map(|c| (p[c] as i32 - pupil[c] as i32).abs())
                        .max()
                        .unwrap_or(255);
                    dark_eyes += usize::from(dist <= 40);
                }
            }
        }
        assert!(visible > 900, "{visible} visible keypoints");
        assert!(
            majority_ok as f64 >= 0.97 * visible as f64,
            "{majority_ok} of {visible} on a pixel of their part"
        );
        assert!(
            dark_eyes as f64 >= 0.95 * eyes as f64,
            "{dark_eyes} of {eyes} eye keypoints on a pupil-coloured pixel"
        );
        // The dataset does exercise occlusion and truncation.
        assert!(hidden_by_something > 0 && occluded_images > 10 && truncated_images > 5);
    }
}
