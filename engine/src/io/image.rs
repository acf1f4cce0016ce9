//! Reading images into the model's input: RGB, `x = u8/127.5 - 1`, `[1,3,H,W]`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{ImageReader, RgbImage};

use crate::error::{Error, Result, WithPath};

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Largest image side accepted (a 8192x8192 SD input would need far more memory than a desktop has).
pub const MAX_SIDE: u32 = 8192;

/// Image files under `dir`, recursively, in a stable (sorted) order. Hidden entries are skipped.
/// `what` names the images in errors ("training images").
pub fn find_images(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::file(dir, format!("not a folder of {what}")));
    }
    let mut found = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| Error::file(&folder, format!("cannot list the folder: {e}")))?;
        for entry in entries {
            let entry = entry.with_path(&folder)?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if has_image_extension(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(Error::file(
            dir,
            format!(
                "no {what} found (looked for .png, .jpg and .jpeg files in it and its subfolders)"
            ),
        ));
    }
    Ok(found)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decode an image file to RGB, with clear errors for unreadable, non-image or oversized files.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let mut reader = ImageReader::open(path)
        .map_err(|e| Error::file(path, format!("cannot open image: {e}")))?
        .with_guessed_format()
        .map_err(|e| Error::file(path, format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        if super::pickle::is_pickle(path) {
            return Err(super::pickle::pickle_error(
                path,
                "an image must be a PNG or JPEG file",
            ));
        }
        return Err(Error::file(
            path,
            "not a readable image: neither PNG nor JPEG",
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Error::file(path, format!("not a readable image: {e}")))?;
    Ok(img.to_rgb8())
}

/// Parse `WxH` (e.g. `768x768`).
pub fn parse_size(text: &str) -> Result<(u32, u32)> {
    let bad = || Error::invalid(format!("size `{text}` is not WIDTHxHEIGHT (e.g. 768x768)"));
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::invalid(format!(
            "size {w}x{h} must be between 1 and {MAX_SIDE} on each side"
        )));
    }
    Ok((w, h))
}

/// The filter used by `--size`: bicubic (Catmull-Rom), what DIFT's PIL resize uses by default.
pub const RESIZE_FILTER: &str = "bicubic (Catmull-Rom)";

/// Resize (squash, no crop) to `size` when given.
pub fn resize(img: RgbImage, size: Option<(u32, u32)>) -> RgbImage {
    match size {
        Some((w, h)) if (w, h) != img.dimensions() => {
            image::imageops::resize(&img, w, h, FilterType::CatmullRom)
        }
        _ => img,
    }
}

/// `[1,3,H,W]` float32 in [-1,1], computed as `u8 / 127.5 - 1` like the reference pipelines.
pub fn to_model_input(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut chw = vec![0f32; 3 * h * w];
    for (i, px) in raw.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    Ok(Tensor::from_vec(chw, (1, 3, h, w), device)?)
}
