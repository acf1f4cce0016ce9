//! Image and feature-grid coordinates, and the one convention that links them.
//!
//! Image coordinates are sub-pixel, x to the right and y down, with **integer values at pixel centres**:
//! pixel (column p, row q) is centred at (p, q) and spans [p-0.5, p+0.5] x [q-0.5, q+0.5]. This is how
//! keypoint annotations (SPair-71k) and DIFT's argmax on an upsampled map address pixels. A point is inside
//! an image of W x H pixels when -0.5 <= x <= W-0.5 and -0.5 <= y <= H-0.5.
//!
//! A feature grid of h x w cells tiles the whole image: cell (row i, column j) covers the pixels
//! [j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h), so its centre is at image x = (j+0.5)*W/w - 0.5.
//! Grid coordinates are in cell units with integer values at cell centres, so
//! `u = (x+0.5)*w/W - 0.5` and back `x = (u+0.5)*W/w - 0.5`. Bilinear sampling in these coordinates is
//! exactly PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` evaluated at pixel centres.

use crate::error::{Error, Result};

/// The size of an image in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageSize {
    pub width: usize,
    pub height: usize,
}

impl ImageSize {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height }
    }

    pub(crate) fn ensure_nonempty(&self, name: &str) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::invalid(format!(
                "{name}: image size {}x{} is empty",
                self.width, self.height
            )));
        }
        Ok(())
    }
}

/// A sub-pixel position in image coordinates (see the module docs for the convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImagePoint {
    pub x: f32,
    pub y: f32,
}

impl ImagePoint {
    pub fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }
}

/// A position on a feature grid, in cells, with integer values at cell centres: x is the column, y the row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridPoint {
    pub x: f32,
    pub y: f32,
}

/// The size of a feature grid in cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GridSize {
    pub height: usize,
    pub width: usize,
}

impl GridSize {
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }

    pub fn cells(&self) -> usize {
        self.height * self.width
    }

    /// Row and column of a row-major cell index.
    pub fn row_col(&self, cell: usize) -> (usize, usize) {
        (cell / self.width.max(1), cell % self.width.max(1))
    }
}

/// Error unless the point is finite and inside the image (pixel-centre convention, see the module docs).
pub fn check_inside(point: ImagePoint, image: ImageSize, name: &str) -> Result<()> {
    image.ensure_nonempty(name)?;
    let inside_x = point.x >= -0.5 && point.x <= image.width as f32 - 0.5;
    let inside_y = point.y >= -0.5 && point.y <= image.height as f32 - 0.5;
    if !(inside_x && inside_y) {
        return Err(Error::invalid(format!(
            "{name}: point ({}, {}) is outside the {}x{} image (valid: x in [-0.5, {}], y in [-0.5, {}])",
            point.x,
            point.y,
            image.width,
            image.height,
            image.width as f32 - 0.5,
            image.height as f32 - 0.5
        )));
    }
    Ok(())
}

/// Image position -> grid position.
pub fn image_to_grid(point: ImagePoint, image: ImageSize, grid: GridSize) -> GridPoint {
    GridPoint {
        x: (point.x + 0.5) * grid.width as f32 / image.width as f32 - 0.5,
        y: (point.y + 0.5) * grid.height as f32 / image.height as f32 - 0.5,
    }
}

/// Grid position -> image position.
pub fn grid_to_image(point: GridPoint, image: ImageSize, grid: GridSize) -> ImagePoint {
    ImagePoint {
        x: (point.x + 0.5) * image.width as f32 / grid.width as f32 - 0.5,
        y: (point.y + 0.5) * image.height as f32 / grid.height as f32 - 0.5,
    }
}

/// The cell (row, column) that covers an image position; points on the border belong to the border cells.
pub fn cell_of(point: ImagePoint, image: ImageSize, grid: GridSize) -> (usize, usize) {
    let g = image_to_grid(point, image, grid);
    (
        nearest_index(g.y, grid.height),
        nearest_index(g.x, grid.width),
    )
}

/// The index whose centre is nearest, clamped to the grid: floor(u + 0.5) in [0, n-1].
fn nearest_index(u: f32, n: usize) -> usize {
    let i = (u + 0.5).floor();
    if i <= 0.0 || !i.is_finite() {
        0
    } else {
        (i as usize).min(n.saturating_sub(1))
    }
}

/// The two neighbouring indices and the weight of the second for linear interpolation at u, clamped like
/// PyTorch's `align_corners=False` (positions before the first centre take the first value, and likewise at the end).
pub(crate) fn linear_taps(u: f32, n: usize) -> (usize, usize, f32) {
    let last = n.saturating_sub(1);
    let u = if u.is_finite() {
        u.clamp(0.0, last as f32)
    } else {
        0.0
    };
    let i0 = (u.floor() as usize).min(last);
    let i1 = (i0 + 1).min(last);
    (i0, i1, u - i0 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_centres_map_to_pixel_block_centres() {
        let image = ImageSize::new(768, 768);
        let grid = GridSize::new(48, 48);
        // Cell 0 covers pixels 0..=15, whose centre is at 7.5.
        let p = grid_to_image(GridPoint { x: 0.0, y: 0.0 }, image, grid);
        assert_eq!((p.x, p.y), (7.5, 7.5));
        let g = image_to_grid(ImagePoint::new(7.5, 23.5), image, grid);
        assert_eq!((g.x, g.y), (0.0, 1.0));
        assert_eq!(cell_of(ImagePoint::new(15.4, 16.0), image, grid), (1, 0));
        assert_eq!(cell_of(ImagePoint::new(767.5, -0.5), image, grid), (0, 47));
    }

    #[test]
    fn inside_check() {
        let image = ImageSize::new(10, 4);
        assert!(check_inside(ImagePoint::new(-0.5, 3.5), image, "p").is_ok());
        assert!(check_inside(ImagePoint::new(9.6, 0.0), image, "p").is_err());
        assert!(check_inside(ImagePoint::new(f32::NAN, 0.0), image, "p").is_err());
        assert!(check_inside(ImagePoint::new(0.0, 0.0), ImageSize::new(0, 4), "p").is_err());
    }

    #[test]
    fn taps_clamp_like_pytorch() {
        assert_eq!(linear_taps(-0.3, 4), (0, 1, 0.0));
        assert_eq!(linear_taps(1.25, 4), (1, 2, 0.25));
        assert_eq!(linear_taps(3.4, 4), (3, 3, 0.0));
        assert_eq!(linear_taps(0.7, 1), (0, 0, 0.0));
    }
}
