//! A contact sheet of generated images, optionally with their keypoints marked, to look at.

use image::RgbImage;

use super::creatures::Category;
use super::scene::{render_instance, Keypoint};
use crate::export::colormap::palette;

/// The first `count` images of the dataset `seed` would generate (categories taking turns as in
/// [`super::generate_dataset`]), enlarged `zoom` times (nearest neighbour) on a grid of `columns`,
/// with each visible keypoint marked by a square in its id's palette colour if `mark_keypoints`.
pub fn contact_sheet(
    seed: u64,
    size: u32,
    categories: &[Category],
    count: usize,
    columns: usize,
    zoom: u32,
    mark_keypoints: bool,
) -> RgbImage {
    let columns = columns.max(1) as u32;
    let rows = (count as u32).div_ceil(columns).max(1);
    let (cell, gap) = (size * zoom, 2);
    let mut sheet = RgbImage::from_pixel(
        columns * (cell + gap) + gap,
        rows * (cell + gap) + gap,
        image::Rgb([255; 3]),
    );
    if categories.is_empty() {
        return sheet;
    }
    for index in 0..count {
        let category = categories[index % categories.len()];
        let rendered = render_instance(seed, index as u64, category, size);
        let (col, row) = (index as u32 % columns, index as u32 / columns);
        let (ox, oy) = (gap + col * (cell + gap), gap + row * (cell + gap));
        for y in 0..cell {
            for x in 0..cell {
                let p = *rendered.image.get_pixel(x / zoom, y / zoom);
                sheet.put_pixel(ox + x, oy + y, p);
            }
        }
        if mark_keypoints {
            for (id, k) in rendered
                .annotation
                .keypoints
                .iter()
                .enumerate()
                .filter(|(_, k)| k.visible)
            {
                mark(&mut sheet, (ox, oy), zoom, k, palette(id));
            }
        }
    }
    sheet
}

/// A filled square with a black rim, centred on the keypoint.
fn mark(sheet: &mut RgbImage, origin: (u32, u32), zoom: u32, k: &Keypoint, color: [u8; 3]) {
    let cx = origin.0 as f64 + (k.x + 0.5) * zoom as f64;
    let cy = origin.1 as f64 + (k.y + 0.5) * zoom as f64;
    let half = 3i64;
    for dy in -half..=half {
        for dx in -half..=half {
            let (x, y) = (cx.floor() as i64 + dx, cy.floor() as i64 + dy);
            if x < 0 || y < 0 || x >= sheet.width() as i64 || y >= sheet.height() as i64 {
                continue;
            }
            let rim = dx.abs() == half || dy.abs() == half;
            sheet.put_pixel(
                x as u32,
                y as u32,
                image::Rgb(if rim { [0, 0, 0] } else { color }),
            );
        }
    }
}
