//! The creature categories: their named parts (the keypoints) and how one random instance of
//! each is built from shapes in its own local frame.
//!
//! Local frame: y points down, the creature spans about [-1, 1] on both axes. Each category is
//! drawn from one view, which fixes where the creature's own left is:
//! - `cat` and `bird` face the viewer (front view): the creature's left is at local +x, on the
//!   viewer's right, as with a person facing you.
//! - `fish` is seen from the side, facing local +x: we see its right flank, so its right eye and
//!   right pectoral fin are visible and the left ones are hidden behind the body.
//! - `bug` is seen from above, head up: the creature's left is at local -x.
//!
//! Mirroring an instance (see [`super::geometry::Pose`]) turns every left part into a right one
//! and back: a mirrored front-facing cat still faces you, so the eye now on the viewer's right is
//! its left eye; a mirrored fish faces the other way and shows its left flank.

use rand::Rng;

use super::color::{body_color, hsv, Rgb};
use super::detmath::sin_cos;
use super::geometry::{centroid, circle, ellipse, pt, quad_bezier, Pt, Shape};
use super::raster::Paint;

/// A category of creature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Cat,
    Bird,
    Fish,
    Bug,
}

/// How a category is seen, which decides where its left side is (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Front,
    Side,
    Top,
}

impl Category {
    pub const ALL: [Category; 4] = [Category::Cat, Category::Bird, Category::Fish, Category::Bug];

    pub fn name(self) -> &'static str {
        match self {
            Category::Cat => "cat",
            Category::Bird => "bird",
            Category::Fish => "fish",
            Category::Bug => "bug",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn view(self) -> View {
        match self {
            Category::Cat | Category::Bird => View::Front,
            Category::Fish => View::Side,
            Category::Bug => View::Top,
        }
    }

    /// The keypoint names; keypoint id `i` (SPair's `"i"`) is `parts()[i]`.
    /// `nose` is the tip of the snout: a cat's nose, a bird's beak, a fish's mouth.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            Category::Cat => &[
                "left_eye",
                "right_eye",
                "nose",
                "left_ear",
                "right_ear",
                "tail",
                "left_foot",
                "right_foot",
            ],
            Category::Bird => &[
                "left_eye",
                "right_eye",
                "nose",
                "left_wing",
                "right_wing",
                "tail",
                "left_foot",
                "right_foot",
            ],
            Category::Fish => &[
                "left_eye",
                "right_eye",
                "nose",
                "dorsal_fin",
                "belly_fin",
                "tail",
                "left_fin",
                "right_fin",
            ],
            Category::Bug => &[
                "left_eye",
                "right_eye",
                "left_antenna",
                "right_antenna",
                "left_wing",
                "right_wing",
                "left_foot",
                "right_foot",
            ],
        }
    }

    /// The id of a part by name.
    pub fn part_id(self, name: &str) -> Option<usize> {
        self.parts().iter().position(|p| *p == name)
    }

    /// The part a mirror image turns `part` into: `left_x` <-> `right_x`, others unchanged.
    pub fn mirror_part(self, part: usize) -> usize {
        let Some(name) = self.parts().get(part) else {
            return part;
        };
        let other = if let Some(rest) = name.strip_prefix("left_") {
            format!("right_{rest}")
        } else if let Some(rest) = name.strip_prefix("right_") {
            format!("left_{rest}")
        } else {
            return part;
        };
        self.part_id(&other).unwrap_or(part)
    }
}

/// What a shape belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The creature, but no named part (body, head, legs...).
    Body,
    /// Part id (index into [`Category::parts`]).
    Part(usize),
}

#[derive(Clone, Debug)]
pub struct DrawItem {
    pub shape: Shape,
    pub paint: Paint,
    pub owner: Owner,
}

/// A keypoint in the local frame, before mirroring.
#[derive(Clone, Copy, Debug)]
pub struct LocalKeypoint {
    pub at: Pt,
    /// On the far side of the creature in this view (a fish's left eye): never visible.
    pub hidden: bool,
}

/// One creature in its local frame, ready to be posed and drawn.
#[derive(Clone, Debug)]
pub struct Creature {
    pub category: Category,
    /// In drawing order (later items cover earlier ones).
    pub items: Vec<DrawItem>,
    /// One per part id.
    pub keypoints: Vec<LocalKeypoint>,
    /// The main body colour (backgrounds are chosen to contrast with it).
    pub body_color: Rgb,
    /// Half width and half height of the box holding every shape, centred on the origin.
    pub half_extent: Pt,
}

/// The pupil colour of every eye (tests look for it at eye keypoints).
pub const PUPIL: Rgb = Rgb(0.04, 0.04, 0.06);

/// Builds a creature part by part, keeping keypoints by part name.
struct Builder {
    category: Category,
    items: Vec<DrawItem>,
    keypoints: Vec<Option<LocalKeypoint>>,
}

impl Builder {
    fn new(category: Category) -> Self {
        Self {
            category,
            items: Vec::new(),
            keypoints: vec![None; category.parts().len()],
        }
    }

    fn id(&self, part: &str) -> usize {
        // Part names below are all spelled as in `parts()`; a typo is caught by the tests.
        self.category.part_id(part).unwrap_or(usize::MAX)
    }

    fn body(&mut self, shape: Shape, paint: Paint) {
        self.items.push(DrawItem {
            shape,
            paint,
            owner: Owner::Body,
        });
    }

    fn part(&mut self, part: &str, shape: Shape, paint: Paint) {
        let owner = Owner::Part(self.id(part));
        self.items.push(DrawItem {
            shape,
            paint,
            owner,
        });
    }

    fn keypoint(&mut self, part: &str, at: Pt, hidden: bool) {
        let id = self.id(part);
        if let Some(slot) = self.keypoints.get_mut(id) {
            *slot = Some(LocalKeypoint { at, hidden });
        }
    }

    /// An eye: a light disc with a dark round pupil; the keypoint is the pupil's centre.
    fn eye(&mut self, part: &str, c: Pt, r: f64, white: Rgb, pupil_ratio: f64) {
        self.part(part, circle(c, r), Paint::Solid(white));
        self.part(part, circle(c, r * pupil_ratio), Paint::Solid(PUPIL));
        self.keypoint(part, c, false);
    }

    /// A thick curve made of capsules.
    fn curve(&mut self, owner: Owner, points: &[Pt], r: f64, paint: &Paint) {
        for w in points.windows(2) {
            let shape = Shape::Capsule {
                a: w[0],
                b: w[1],
                r,
            };
            self.items.push(DrawItem {
                shape,
                paint: paint.clone(),
                owner,
            });
        }
    }

    fn finish(self, body_color: Rgb) -> Creature {
        let keypoints = self
            .keypoints
            .into_iter()
            .map(|k| {
                k.unwrap_or(LocalKeypoint {
                    at: pt(0.0, 0.0),
                    hidden: true,
                })
            })
            .collect();
        let mut creature = Creature {
            category: self.category,
            items: self.items,
            keypoints,
            body_color,
            half_extent: pt(0.0, 0.0),
        };
        creature.recentre();
        creature
    }
}

impl Creature {
    /// A random instance of `category`.
    pub fn random(category: Category, rng: &mut impl Rng) -> Self {
        match category {
            Category::Cat => cat(rng),
            Category::Bird => bird(rng),
            Category::Fish => fish(rng),
            Category::Bug => bug(rng),
        }
    }

    /// Shift everything so the shapes' bounding box is centred on the origin.
    fn recentre(&mut self) {
        let (mut lo, mut hi) = (
            pt(f64::INFINITY, f64::INFINITY),
            pt(f64::NEG_INFINITY, f64::NEG_INFINITY),
        );
        for item in &self.items {
            let (a, b) = local_bounds(&item.shape);
            lo = pt(lo.x.min(a.x), lo.y.min(a.y));
            hi = pt(hi.x.max(b.x), hi.y.max(b.y));
        }
        let mid = lo.lerp(hi, 0.5);
        for item in &mut self.items {
            item.shape = translate(&item.shape, mid);
            item.paint = translate_paint(&item.paint, mid);
        }
        for k in &mut self.keypoints {
            k.at = k.at.minus(mid);
        }
        self.half_extent = hi.minus(lo).scale(0.5);
    }
}

fn local_bounds(shape: &Shape) -> (Pt, Pt) {
    // An identity pose gives the exact bounds of the shape in its own frame.
    let identity = super::geometry::Pose::new(pt(0.0, 0.0), 1.0, 0.0, false);
    shape.to_image(&identity).bounds()
}

fn translate(shape: &Shape, by: Pt) -> Shape {
    match shape {
        Shape::Ellipse { c, rx, ry, angle } => Shape::Ellipse {
            c: c.minus(by),
            rx: *rx,
            ry: *ry,
            angle: *angle,
        },
        Shape::Polygon(points) => Shape::Polygon(points.iter().map(|p| p.minus(by)).collect()),
        Shape::Capsule { a, b, r } => Shape::Capsule {
            a: a.minus(by),
            b: b.minus(by),
            r: *r,
        },
    }
}

/// Textures are defined in the local frame, so they move with the shapes.
fn translate_paint(paint: &Paint, by: Pt) -> Paint {
    match paint {
        Paint::Solid(c) => Paint::Solid(*c),
        Paint::Stripes {
            a,
            b,
            dir,
            period,
            duty,
            phase,
        } => {
            // q.dir/period + phase must stay the same for q' = q - by.
            Paint::Stripes {
                a: *a,
                b: *b,
                dir: *dir,
                period: *period,
                duty: *duty,
                phase: phase + by.dot(*dir) / period,
            }
        }
        Paint::Spots { base, spot, spots } => Paint::Spots {
            base: *base,
            spot: *spot,
            spots: spots.iter().map(|(c, r)| (c.minus(by), *r)).collect(),
        },
    }
}

fn u(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    rng.random_range(lo..hi)
}

fn white() -> Rgb {
    Rgb(1.0, 1.0, 1.0)
}

/// A coat: plain, striped (bands across `stripe_dir`, give or take) or spotted.
fn coat(rng: &mut impl Rng, base: Rgb, stripe_dir: Pt) -> Paint {
    let mark = if rng.random_bool(0.5) {
        base.shade(rng.random_range(0.35f32..0.6))
    } else {
        base.mix(white(), 0.6)
    };
    match rng.random_range(0u32..3) {
        0 => Paint::Solid(base),
        1 => {
            let (s, c) = sin_cos(u(rng, -0.3, 0.3));
            let dir = pt(
                c * stripe_dir.x - s * stripe_dir.y,
                s * stripe_dir.x + c * stripe_dir.y,
            );
            Paint::Stripes {
                a: base,
                b: mark,
                dir,
                period: u(rng, 0.18, 0.28),
                duty: u(rng, 0.35, 0.5),
                phase: u(rng, 0.0, 1.0),
            }
        }
        _ => {
            let n = rng.random_range(18u32..34);
            let spots = (0..n)
                .map(|_| (pt(u(rng, -1.0, 1.0), u(rng, -1.0, 1.0)), u(rng, 0.06, 0.12)))
                .collect();
            Paint::Spots {
                base,
                spot: mark,
                spots,
            }
        }
    }
}

/// A point on an axis-aligned ellipse at `angle` (y down: -pi/2 is the top).
fn on_ellipse(c: Pt, rx: f64, ry: f64, angle: f64) -> Pt {
    let (s, co) = sin_cos(angle);
    pt(c.x + rx * co, c.y + ry * s)
}

/// Front view, creature's left at +x. Parts: eyes, nose, ears, tail, feet.
fn cat(rng: &mut impl Rng) -> Creature {
    let mut b = Builder::new(Category::Cat);
    let fur = body_color(rng);
    let body_paint = coat(rng, fur, pt(0.0, 1.0));
    let paw = if rng.random_bool(0.5) {
        fur.mix(white(), 0.55)
    } else {
        fur.shade(0.6)
    };
    let head_c = pt(0.0, -0.32);
    let (head_rx, head_ry) = (u(rng, 0.46, 0.56), u(rng, 0.4, 0.47));
    let body_c = pt(0.0, u(rng, 0.38, 0.45));
    let (body_rx, body_ry) = (u(rng, 0.42, 0.58), u(rng, 0.42, 0.5));

    // The tail curls up one side from behind the body; its keypoint is the tip.
    let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let start = pt(side * body_rx * 0.6, body_c.y + body_ry * 0.55);
    let tip = pt(side * u(rng, 0.8, 0.98), u(rng, -0.2, 0.15));
    let ctrl = pt(side * u(rng, 1.0, 1.2), u(rng, 0.5, 0.9));
    let tail_r = u(rng, 0.075, 0.1);
    let tail_paint = Paint::Solid(fur.shade(0.9));
    b.curve(
        Owner::Part(b.id("tail")),
        &quad_bezier(start, ctrl, tip, 8),
        tail_r,
        &tail_paint,
    );
    b.keypoint("tail", tip, false);

    b.body(ellipse(body_c, body_rx, body_ry, 0.0), body_paint);
    for (part, s) in [("left_foot", 1.0), ("right_foot", -1.0)] {
        let c = pt(s * body_rx * u(rng, 0.45, 0.6), body_c.y + body_ry * 0.92);
        b.part(part, ellipse(c, 0.16, 0.1, 0.0), Paint::Solid(paw));
        b.keypoint(part, c, false);
    }

    b.body(ellipse(head_c, head_rx, head_ry, 0.0), Paint::Solid(fur));
    let inner = hsv(u(rng, 0.92, 1.0) as f32, 0.45, 0.92);
    let ear_len = u(rng, 0.34, 0.46);
    let ear_spread = u(rng, 0.45, 0.7);
    for (part, s) in [("left_ear", 1.0), ("right_ear", -1.0)] {
        // The ear's base is an arc of the head outline; the tip points outwards from its middle.
        let top = -std::f64::consts::FRAC_PI_2;
        let a0 = on_ellipse(head_c, head_rx, head_ry, top + 0.2);
        let a1 = on_ellipse(head_c, head_rx, head_ry, top + 0.2 + ear_spread + 0.35);
        let (a0, a1) = (pt(s * a0.x, a0.y), pt(s * a1.x, a1.y));
        let mid = a0.lerp(a1, 0.5);
        let out = mid.minus(head_c);
        let out = out.scale(1.0 / out.dot(out).sqrt());
        let apex = mid.plus(out.scale(ear_len)).plus(pt(s * 0.05, -0.05));
        let c = centroid(a0, a1, apex);
        b.part(part, Shape::Polygon(vec![a0, apex, a1]), Paint::Solid(fur));
        let shrink = |p: Pt| c.lerp(p, 0.55);
        b.part(
            part,
            Shape::Polygon(vec![shrink(a0), shrink(apex), shrink(a1)]),
            Paint::Solid(inner),
        );
        b.keypoint(part, c, false);
    }

    let eye_white = hsv(u(rng, 0.12, 0.35) as f32, 0.35, 0.97);
    let eye_r = u(rng, 0.13, 0.16);
    let eye_y = head_c.y + u(rng, -0.06, 0.02);
    let eye_dx = head_rx * u(rng, 0.38, 0.46);
    b.eye("left_eye", pt(eye_dx, eye_y), eye_r, eye_white, 0.6);
    b.eye("right_eye", pt(-eye_dx, eye_y), eye_r, eye_white, 0.6);

    let nose_y = head_c.y + head_ry * 0.4;
    let (nw, nh) = (u(rng, 0.08, 0.11), u(rng, 0.09, 0.12));
    let (n0, n1, n2) = (
        pt(-nw, nose_y - nh / 2.0),
        pt(nw, nose_y - nh / 2.0),
        pt(0.0, nose_y + nh / 2.0),
    );
    b.part(
        "nose",
        Shape::Polygon(vec![n0, n1, n2]),
        Paint::Solid(hsv(0.97, 0.5, 0.85)),
    );
    b.keypoint("nose", centroid(n0, n1, n2), false);
    b.finish(fur)
}

/// Front view (an owl), creature's left at +x. Parts: eyes, beak (nose), wings, tail, feet.
fn bird(rng: &mut impl Rng) -> Creature {
    let mut b = Builder::new(Category::Bird);
    let plumage = body_color(rng);
    let belly = plumage.mix(white(), rng.random_range(0.45f32..0.75));
    let wing = plumage.shade(rng.random_range(0.55f32..0.75));
    let orange = hsv(u(rng, 0.06, 0.13) as f32, 0.85, 0.95);
    let body_c = pt(0.0, 0.12);
    let (body_rx, body_ry) = (u(rng, 0.5, 0.6), u(rng, 0.66, 0.76));

    // A fan of tail feathers below the body; the keypoint is its middle.
    let top = body_c.y + body_ry * 0.7;
    let tail_len = u(rng, 0.42, 0.52);
    let fan = u(rng, 0.2, 0.3);
    let end = top + tail_len;
    let tail = vec![
        pt(-0.12, top),
        pt(0.12, top),
        pt(fan, end),
        pt(0.0, end - 0.06),
        pt(-fan, end),
    ];
    b.part("tail", Shape::Polygon(tail), Paint::Solid(wing.shade(0.85)));
    b.keypoint("tail", pt(0.0, end - 0.14), false);

    b.body(
        ellipse(body_c, body_rx, body_ry, 0.0),
        Paint::Solid(plumage),
    );
    b.body(
        ellipse(pt(0.0, -0.38), body_rx * 0.95, 0.4, 0.0),
        Paint::Solid(plumage),
    );
    let belly_paint = coat(rng, belly, pt(0.0, 1.0));
    b.body(
        ellipse(
            pt(0.0, body_c.y + 0.18),
            body_rx * 0.62,
            body_ry * 0.55,
            0.0,
        ),
        belly_paint,
    );

    let tilt = u(rng, 0.1, 0.35);
    let (wing_rx, wing_ry) = (u(rng, 0.14, 0.19), u(rng, 0.36, 0.46));
    for (part, s) in [("left_wing", 1.0), ("right_wing", -1.0)] {
        let c = pt(s * body_rx * 0.88, body_c.y + 0.05);
        // The long axis leans outwards at the top.
        b.part(
            part,
            ellipse(c, wing_ry, wing_rx, std::f64::consts::FRAC_PI_2 + s * tilt),
            Paint::Solid(wing),
        );
        b.keypoint(part, c, false);
    }

    let feet_y = body_c.y + body_ry * 0.95;
    let feet_dx = u(rng, 0.17, 0.24);
    for (part, s) in [("left_foot", 1.0), ("right_foot", -1.0)] {
        let c = pt(s * feet_dx, feet_y);
        b.part(part, ellipse(c, 0.12, 0.075, 0.0), Paint::Solid(orange));
        b.keypoint(part, c, false);
    }

    let eye_r = u(rng, 0.15, 0.18);
    let eye_dx = u(rng, 0.2, 0.25);
    let eye_y = -0.36;
    let disc = plumage.mix(white(), 0.75);
    for s in [1.0, -1.0] {
        b.body(
            circle(pt(s * eye_dx, eye_y), eye_r * 1.45),
            Paint::Solid(disc),
        );
    }
    let iris = hsv(u(rng, 0.1, 0.16) as f32, 0.8, 1.0);
    b.eye("left_eye", pt(eye_dx, eye_y), eye_r, iris, 0.5);
    b.eye("right_eye", pt(-eye_dx, eye_y), eye_r, iris, 0.5);

    let (bw, bh) = (u(rng, 0.07, 0.09), u(rng, 0.16, 0.22));
    let beak_top = eye_y + 0.08;
    let (p0, p1, p2) = (pt(-bw, beak_top), pt(bw, beak_top), pt(0.0, beak_top + bh));
    b.part(
        "nose",
        Shape::Polygon(vec![p0, p1, p2]),
        Paint::Solid(orange.shade(0.85)),
    );
    b.keypoint("nose", centroid(p0, p1, p2), false);
    b.finish(plumage)
}

/// Side view facing +x: its right flank shows. Parts: eyes and pectoral fins (left ones hidden),
/// mouth (nose), dorsal and belly fins, tail fin.
fn fish(rng: &mut impl Rng) -> Creature {
    let mut b = Builder::new(Category::Fish);
    let scales = body_color(rng);
    let fin = if rng.random_bool(0.5) {
        scales.shade(0.65)
    } else {
        hsv(rng.random::<f32>(), 0.6, 0.8)
    };
    let (rx, ry) = (u(rng, 0.7, 0.82), u(rng, 0.34, 0.45));

    // Tail fin with a notch; its keypoint lies between the body and the notch.
    let lobe = u(rng, 0.36, 0.46);
    let root = -rx + 0.1;
    let (notch, lobe_x) = (-rx - 0.26, -rx - u(rng, 0.36, 0.42));
    let tail = vec![
        pt(root, -0.1),
        pt(lobe_x, -lobe),
        pt(notch, 0.0),
        pt(lobe_x, lobe),
        pt(root, 0.1),
    ];
    b.part("tail", Shape::Polygon(tail), Paint::Solid(fin));
    b.keypoint("tail", pt(-rx - 0.13, 0.0), false);

    // Dorsal and belly fins stick out of the body; keypoints sit well outside the body.
    let apex_x = u(rng, -0.15, 0.1);
    let d = [
        pt(-0.45 * rx, -ry * 0.7),
        pt(apex_x, -ry - u(rng, 0.22, 0.3)),
        pt(0.3 * rx, -ry * 0.8),
    ];
    b.part("dorsal_fin", Shape::Polygon(d.to_vec()), Paint::Solid(fin));
    b.keypoint(
        "dorsal_fin",
        centroid(d[0], d[1], d[2]).lerp(d[1], 0.35),
        false,
    );
    let v = [
        pt(-0.35 * rx, ry * 0.7),
        pt(-0.15 * rx, ry + u(rng, 0.16, 0.22)),
        pt(0.1 * rx, ry * 0.75),
    ];
    b.part("belly_fin", Shape::Polygon(v.to_vec()), Paint::Solid(fin));
    b.keypoint(
        "belly_fin",
        centroid(v[0], v[1], v[2]).lerp(v[1], 0.35),
        false,
    );

    b.body(
        ellipse(pt(0.0, 0.0), rx, ry, 0.0),
        coat(rng, scales, pt(1.0, 0.0)),
    );
    // Gill slit.
    let gill = quad_bezier(
        pt(0.38 * rx, -0.55 * ry),
        pt(0.3 * rx, 0.0),
        pt(0.38 * rx, 0.55 * ry),
        4,
    );
    b.curve(Owner::Body, &gill, 0.025, &Paint::Solid(scales.shade(0.5)));

    let fin_c = pt(0.1 * rx, 0.25 * ry);
    b.part(
        "right_fin",
        ellipse(fin_c, 0.2, 0.08, 0.5),
        Paint::Solid(fin),
    );
    b.keypoint("right_fin", fin_c, false);
    b.keypoint("left_fin", fin_c, true);

    let eye_c = pt(rx * 0.62, -ry * 0.25);
    b.eye(
        "right_eye",
        eye_c,
        u(rng, 0.11, 0.13),
        Rgb(0.96, 0.96, 0.93),
        0.55,
    );
    b.keypoint("left_eye", eye_c, true);

    let mouth = pt(rx * 0.9, ry * 0.22);
    b.part(
        "nose",
        ellipse(mouth, 0.09, 0.045, 0.35),
        Paint::Solid(scales.shade(0.35)),
    );
    b.keypoint("nose", mouth, false);
    b.finish(scales)
}

/// Top view, head up: the creature's left is at -x. Parts: eyes, antennae (tips), wing cases,
/// front feet.
fn bug(rng: &mut impl Rng) -> Creature {
    let mut b = Builder::new(Category::Bug);
    let shell = body_color(rng);
    let dark = hsv(rng.random::<f32>(), 0.3, rng.random_range(0.12f32..0.25));
    let dark_paint = Paint::Solid(dark);
    let leg_r = 0.045;
    let (rx, ry) = (u(rng, 0.42, 0.5), u(rng, 0.52, 0.62));
    let shell_c = pt(0.0, 0.18);

    // Legs: front, middle, hind on each side; the front ones end in the feet keypoints.
    let reach = u(rng, 0.9, 1.1);
    for (foot, s) in [("left_foot", -1.0), ("right_foot", 1.0)] {
        let legs = [
            (
                pt(s * 0.2, -0.3),
                pt(s * 0.55 * reach, -0.42),
                pt(s * 0.62 * reach, -0.72),
            ),
            (
                pt(s * 0.3, 0.05),
                pt(s * 0.7 * reach, 0.0),
                pt(s * 0.85 * reach, 0.2),
            ),
            (
                pt(s * 0.3, 0.4),
                pt(s * 0.62 * reach, 0.55),
                pt(s * 0.68 * reach, 0.88),
            ),
        ];
        for (i, (hip, knee, end)) in legs.into_iter().enumerate() {
            b.curve(Owner::Body, &[hip, knee, end], leg_r, &dark_paint);
            if i == 0 {
                b.part(foot, circle(end, 0.085), dark_paint.clone());
                b.keypoint(foot, end, false);
            }
        }
    }

    // Antennae curve up and out from the head and end in a ball (the keypoint).
    let spread = u(rng, 0.3, 0.5);
    for (part, s) in [("left_antenna", -1.0), ("right_antenna", 1.0)] {
        let tip = pt(s * spread, -1.12);
        let stalk = quad_bezier(pt(s * 0.08, -0.78), pt(s * 0.12, -1.05), tip, 5);
        b.curve(Owner::Part(b.id(part)), &stalk, 0.03, &dark_paint);
        b.part(part, circle(tip, 0.075), dark_paint.clone());
        b.keypoint(part, tip, false);
    }

    // Wing cases: the two halves of the shell, split along the middle.
    let paint = coat(rng, shell, pt(1.0, 0.0));
    for (part, s) in [("left_wing", -1.0), ("right_wing", 1.0)] {
        let half: Vec<Pt> = (0..=16)
            .map(|i| {
                let a = -std::f64::consts::FRAC_PI_2 + std::f64::consts::PI * i as f64 / 16.0;
                let p = on_ellipse(shell_c, rx, ry, a);
                pt(s * p.x, p.y)
            })
            .collect();
        b.part(part, Shape::Polygon(half), paint.clone());
        b.keypoint(part, pt(s * rx * 0.5, shell_c.y), false);
    }
    b.body(
        Shape::Capsule {
            a: pt(0.0, shell_c.y - ry),
            b: pt(0.0, shell_c.y + ry * 0.95),
            r: 0.025,
        },
        dark_paint.clone(),
    );
    b.body(
        ellipse(pt(0.0, -0.48), 0.3, 0.16, 0.0),
        Paint::Solid(dark.mix(shell, 0.25)),
    );
    b.body(ellipse(pt(0.0, -0.7), 0.26, 0.17, 0.0), dark_paint.clone());

    let eye_r = u(rng, 0.1, 0.12);
    b.eye(
        "left_eye",
        pt(-0.17, -0.74),
        eye_r,
        Rgb(0.95, 0.95, 0.9),
        0.55,
    );
    b.eye(
        "right_eye",
        pt(0.17, -0.74),
        eye_r,
        Rgb(0.95, 0.95, 0.9),
        0.55,
    );
    b.finish(shell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mirror_parts_swap_left_and_right() {
        let cat = Category::Cat;
        assert_eq!(cat.parts()[cat.mirror_part(0)], "right_eye");
        assert_eq!(cat.parts()[cat.mirror_part(1)], "left_eye");
        assert_eq!(cat.parts()[cat.mirror_part(2)], "nose");
        for c in Category::ALL {
            for p in 0..c.parts().len() {
                assert_eq!(c.mirror_part(c.mirror_part(p)), p);
            }
        }
    }

    #[test]
    fn every_part_has_a_keypoint_and_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for c in Category::ALL {
            let creature = Creature::random(c, &mut rng);
            assert_eq!(creature.keypoints.len(), c.parts().len());
            for (id, name) in c.parts().iter().enumerate() {
                let k = creature.keypoints[id];
                let drawn = creature.items.iter().any(|i| i.owner == Owner::Part(id));
                // Hidden keypoints are the far-side parts of a side view, which are not drawn.
                assert_eq!(drawn, !k.hidden, "{}: {name}", c.name());
                assert!(
                    k.at.x.abs() < 1.3 && k.at.y.abs() < 1.3,
                    "{}: {name} at {:?}",
                    c.name(),
                    k.at
                );
            }
            assert!(creature.half_extent.x > 0.5 && creature.half_extent.y > 0.5);
        }
    }
}
