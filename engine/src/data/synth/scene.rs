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
    /// In the frame, on a drawn part, and not covered by anything drawn after it.
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
        let shape = item.shape.to_image(&pose);
        let label = label_of(item.owner);
        canvas.draw(&shape, &item.paint, &pose, label);
        placed.push((shape, label));
    }
    let is_creature = |l: u8| l >= LABEL_BODY;
    let mut occluded = false;
    if let Some(o) = &occluder {
        let before = canvas.count_labels(is_creature);
        let shape = o.shape.to_image(&pose);
        canvas.draw(&shape, &o.paint, &pose, LABEL_OCCLUDER);
        occluded = canvas.count_labels(is_creature) < before;
        placed.push((shape, LABEL_OCCLUDER));
    }

    let keypoints = keypoints_in_image(&creature, &pose, &placed, side);
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
    let center = target.add(pt(c, s).scale(rng.random_range(0.15..0.45)));
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
                center.add(pt(c * k, s * k))
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
        let in_frame = p.x >= 0.0 && p.y >= 0.0 && p.x < size && p.y < size;
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
