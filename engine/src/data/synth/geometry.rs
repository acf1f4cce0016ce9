//! Points, the creature's pose (mirror, scale, rotation, position) and the shapes it is drawn
//! with, with exact inside tests so the rasteriser and the visibility check agree.

use super::detmath::sin_cos;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pt {
    pub x: f64,
    pub y: f64,
}

pub const fn pt(x: f64, y: f64) -> Pt {
    Pt { x, y }
}

impl Pt {
    pub fn plus(self, o: Pt) -> Pt {
        pt(self.x + o.x, self.y + o.y)
    }
    pub fn minus(self, o: Pt) -> Pt {
        pt(self.x - o.x, self.y - o.y)
    }
    pub fn scale(self, k: f64) -> Pt {
        pt(self.x * k, self.y * k)
    }
    pub fn lerp(self, o: Pt, t: f64) -> Pt {
        pt(self.x + (o.x - self.x) * t, self.y + (o.y - self.y) * t)
    }
    pub fn dot(self, o: Pt) -> f64 {
        self.x * o.x + self.y * o.y
    }
    /// The mirror image across the creature's vertical axis.
    pub fn mirrored(self) -> Pt {
        pt(-self.x, self.y)
    }
}

/// Where a creature stands in the image: local point `q` goes to
/// `center + scale * R(rotation) * (mirror ? (-q.x, q.y) : q)`, in image coordinates where pixel
/// column i spans [i, i+1) (y down, so a positive rotation turns clockwise on screen).
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    pub center: Pt,
    pub scale: f64,
    pub rotation: f64,
    pub mirror: bool,
    sin: f64,
    cos: f64,
}

impl Pose {
    pub fn new(center: Pt, scale: f64, rotation: f64, mirror: bool) -> Self {
        let (sin, cos) = sin_cos(rotation);
        Self {
            center,
            scale,
            rotation,
            mirror,
            sin,
            cos,
        }
    }

    pub fn to_image(&self, q: Pt) -> Pt {
        let q = if self.mirror { q.mirrored() } else { q };
        let (x, y) = (q.x * self.scale, q.y * self.scale);
        pt(
            self.center.x + self.cos * x - self.sin * y,
            self.center.y + self.sin * x + self.cos * y,
        )
    }

    pub fn to_local(&self, p: Pt) -> Pt {
        let d = p.minus(self.center);
        let x = (self.cos * d.x + self.sin * d.y) / self.scale;
        let y = (-self.sin * d.x + self.cos * d.y) / self.scale;
        if self.mirror {
            pt(-x, y)
        } else {
            pt(x, y)
        }
    }

    /// An angle of the local frame measured in the image (mirroring reverses it).
    fn angle_to_image(&self, local_angle: f64) -> f64 {
        if self.mirror {
            self.rotation - local_angle
        } else {
            self.rotation + local_angle
        }
    }
}

/// A shape in the creature's local frame.
#[derive(Clone, Debug)]
pub enum Shape {
    /// Centre, semi-axes, and the angle of the x semi-axis.
    Ellipse { c: Pt, rx: f64, ry: f64, angle: f64 },
    /// A simple polygon (any winding).
    Polygon(Vec<Pt>),
    /// A thick segment with round ends.
    Capsule { a: Pt, b: Pt, r: f64 },
}

pub fn circle(c: Pt, r: f64) -> Shape {
    Shape::Ellipse {
        c,
        rx: r,
        ry: r,
        angle: 0.0,
    }
}

pub fn ellipse(c: Pt, rx: f64, ry: f64, angle: f64) -> Shape {
    Shape::Ellipse { c, rx, ry, angle }
}

impl Shape {
    pub fn to_image(&self, pose: &Pose) -> ImageShape {
        match self {
            Shape::Ellipse { c, rx, ry, angle } => {
                let (sin, cos) = sin_cos(pose.angle_to_image(*angle));
                ImageShape::Ellipse {
                    c: pose.to_image(*c),
                    inv_rx: 1.0 / (rx * pose.scale),
                    inv_ry: 1.0 / (ry * pose.scale),
                    sin,
                    cos,
                    half_extent: pt(
                        (sq(rx * cos) + sq(ry * sin)).sqrt() * pose.scale,
                        (sq(rx * sin) + sq(ry * cos)).sqrt() * pose.scale,
                    ),
                }
            }
            Shape::Polygon(points) => {
                ImageShape::Polygon(points.iter().map(|p| pose.to_image(*p)).collect())
            }
            Shape::Capsule { a, b, r } => ImageShape::Capsule {
                a: pose.to_image(*a),
                b: pose.to_image(*b),
                r: r * pose.scale,
            },
        }
    }
}

/// A shape placed in the image, ready for inside tests.
#[derive(Clone, Debug)]
pub enum ImageShape {
    Ellipse {
        c: Pt,
        inv_rx: f64,
        inv_ry: f64,
        sin: f64,
        cos: f64,
        half_extent: Pt,
    },
    Polygon(Vec<Pt>),
    Capsule {
        a: Pt,
        b: Pt,
        r: f64,
    },
}

impl ImageShape {
    pub fn contains(&self, p: Pt) -> bool {
        match self {
            ImageShape::Ellipse {
                c,
                inv_rx,
                inv_ry,
                sin,
                cos,
                ..
            } => {
                let d = p.minus(*c);
                let u = (d.x * cos + d.y * sin) * inv_rx;
                let v = (-d.x * sin + d.y * cos) * inv_ry;
                u * u + v * v <= 1.0
            }
            ImageShape::Polygon(points) => polygon_contains(points, p),
            ImageShape::Capsule { a, b, r } => segment_distance_sq(p, *a, *b) <= r * r,
        }
    }

    /// (min, max) corners of a box holding the shape.
    pub fn bounds(&self) -> (Pt, Pt) {
        match self {
            ImageShape::Ellipse { c, half_extent, .. } => {
                (c.minus(*half_extent), c.plus(*half_extent))
            }
            ImageShape::Polygon(points) => {
                let mut lo = pt(f64::INFINITY, f64::INFINITY);
                let mut hi = pt(f64::NEG_INFINITY, f64::NEG_INFINITY);
                for p in points {
                    lo = pt(lo.x.min(p.x), lo.y.min(p.y));
                    hi = pt(hi.x.max(p.x), hi.y.max(p.y));
                }
                (lo, hi)
            }
            ImageShape::Capsule { a, b, r } => (
                pt(a.x.min(b.x) - r, a.y.min(b.y) - r),
                pt(a.x.max(b.x) + r, a.y.max(b.y) + r),
            ),
        }
    }
}

/// Even-odd rule: count crossings of a ray towards +x.
fn polygon_contains(points: &[Pt], p: Pt) -> bool {
    let mut inside = false;
    let n = points.len();
    for i in 0..n {
        let a = points[i];
        let b = points[(i + 1) % n];
        if (a.y > p.y) != (b.y > p.y) {
            let x_cross = a.x + (p.y - a.y) / (b.y - a.y) * (b.x - a.x);
            if p.x < x_cross {
                inside = !inside;
            }
        }
    }
    inside
}

fn segment_distance_sq(p: Pt, a: Pt, b: Pt) -> f64 {
    let ab = b.minus(a);
    let len_sq = ab.dot(ab);
    let t = if len_sq > 0.0 {
        (p.minus(a).dot(ab) / len_sq).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let d = p.minus(a.lerp(b, t));
    d.dot(d)
}

/// Points along a quadratic Bezier curve from `a` to `c` bent towards `ctrl`.
pub fn quad_bezier(a: Pt, ctrl: Pt, c: Pt, steps: usize) -> Vec<Pt> {
    (0..=steps)
        .map(|i| {
            let t = i as f64 / steps as f64;
            a.lerp(ctrl, t).lerp(ctrl.lerp(c, t), t)
        })
        .collect()
}

fn sq(x: f64) -> f64 {
    x * x
}

/// The centroid of a triangle.
pub fn centroid(a: Pt, b: Pt, c: Pt) -> Pt {
    pt((a.x + b.x + c.x) / 3.0, (a.y + b.y + c.y) / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pose_round_trips_and_mirrors() {
        for mirror in [false, true] {
            let pose = Pose::new(pt(30.0, 20.0), 12.0, 0.3, mirror);
            let q = pt(0.4, -0.7);
            let back = pose.to_local(pose.to_image(q));
            assert!((back.x - q.x).abs() < 1e-12 && (back.y - q.y).abs() < 1e-12);
        }
        // No rotation: a local point at +x lands right of centre, or left when mirrored.
        let plain = Pose::new(pt(10.0, 10.0), 2.0, 0.0, false);
        let mirrored = Pose::new(pt(10.0, 10.0), 2.0, 0.0, true);
        assert_eq!(plain.to_image(pt(1.0, 0.5)), pt(12.0, 11.0));
        assert_eq!(mirrored.to_image(pt(1.0, 0.5)), pt(8.0, 11.0));
        // A quarter turn clockwise on screen (y down): local +x goes to image +y.
        let turned = Pose::new(pt(0.0, 0.0), 1.0, std::f64::consts::FRAC_PI_2, false);
        let p = turned.to_image(pt(1.0, 0.0));
        assert!(p.x.abs() < 1e-12 && (p.y - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ellipse_inside_test_follows_the_pose() {
        // A long thin ellipse along local x, rotated 30 degrees then mirrored: its long axis in the
        // image points at 150 degrees (mirror) + rotation 0.
        let shape = ellipse(pt(0.0, 0.0), 1.0, 0.1, 30f64.to_radians());
        let pose = Pose::new(pt(0.0, 0.0), 10.0, 0.0, true);
        let img = shape.to_image(&pose);
        let along = 150f64.to_radians();
        assert!(img.contains(pt(9.0 * along.cos(), 9.0 * along.sin())));
        assert!(!img.contains(pt(
            9.0 * 30f64.to_radians().cos(),
            9.0 * 30f64.to_radians().sin()
        )));
        let (lo, hi) = img.bounds();
        assert!(lo.x < -8.6 && hi.x > 8.6 && lo.y > -5.1 && hi.y < 5.1);
    }

    #[test]
    fn polygon_and_capsule_inside_tests() {
        let tri = ImageShape::Polygon(vec![pt(0.0, 0.0), pt(4.0, 0.0), pt(0.0, 4.0)]);
        assert!(tri.contains(pt(1.0, 1.0)));
        assert!(!tri.contains(pt(3.0, 3.0)));
        let cap = ImageShape::Capsule {
            a: pt(0.0, 0.0),
            b: pt(10.0, 0.0),
            r: 1.0,
        };
        assert!(cap.contains(pt(5.0, 0.9)));
        assert!(cap.contains(pt(10.7, 0.0)));
        assert!(!cap.contains(pt(5.0, 1.1)));
    }
}
