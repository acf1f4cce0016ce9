//! Keypoint annotations of an image in SPair-71k's layout: the image at
//! `<root>/JPEGImages/<category>/<stem>.<ext>` has its annotation at
//! `<root>/ImageAnnotation/<category>/<stem>.json`, with `kps` (keypoint id -> `[x, y]` or null)
//! and `bndbox` (`[x1, y1, x2, y2]`), in pixels with integer values at pixel centres.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::spair::read_keypoint_file;
use crate::error::Result;
use crate::eval::pck::pck_threshold;

/// The visible keypoints of one image, by id, and its object's bounding box.
#[derive(Clone, Debug, PartialEq)]
pub struct Keypoints {
    pub path: PathBuf,
    pub category: String,
    pub points: BTreeMap<u32, [f64; 2]>,
    pub bndbox: Option<[f64; 4]>,
}

impl Keypoints {
    /// The box PCK's threshold is measured on: the object's bounding box, the whole image when
    /// there is none.
    pub fn pck_box(&self, image_width: u32, image_height: u32) -> [f64; 4] {
        let whole_image = [0.0, 0.0, f64::from(image_width), f64::from(image_height)];
        self.bndbox.unwrap_or(whole_image)
    }

    /// The PCK distance unit: the larger side of [`Self::pck_box`].
    pub fn pck_scale(&self, image_width: u32, image_height: u32) -> f64 {
        pck_threshold(self.pck_box(image_width, image_height), 1.0)
    }
}

/// Where an image's annotation would be, if the image sits in a `JPEGImages/<category>/` folder.
pub fn annotation_path(image: &Path) -> Option<PathBuf> {
    let category_dir = image.parent()?;
    let images_dir = category_dir.parent()?;
    if images_dir.file_name()? != "JPEGImages" {
        return None;
    }
    let stem = image.file_stem()?;
    Some(
        images_dir
            .parent()?
            .join("ImageAnnotation")
            .join(category_dir.file_name()?)
            .join(stem)
            .with_extension("json"),
    )
}

/// The annotation of an image: None when it has none, an error naming the file when it is unreadable.
pub fn read_keypoints(image: &Path) -> Result<Option<Keypoints>> {
    let Some(path) = annotation_path(image).filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let file = read_keypoint_file(&path)?;
    let points = file
        .kps
        .into_iter()
        .filter_map(|(id, p)| Some((id, p?)))
        .collect();
    let category = file.category.unwrap_or_else(|| {
        image
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(Some(Keypoints {
        path,
        category,
        points,
        bndbox: file.bndbox,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_reads_spair_layout_annotations() {
        let root = tempfile::tempdir().unwrap();
        let image = root.path().join("JPEGImages/cat/0001.jpg");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, b"").unwrap();
        assert_eq!(read_keypoints(&image).unwrap(), None);
        let ann = root.path().join("ImageAnnotation/cat/0001.json");
        std::fs::create_dir_all(ann.parent().unwrap()).unwrap();
        std::fs::write(
            &ann,
            r#"{"filename": "0001.jpg", "kps": {"0": [3, 4.5], "2": null, "10": [1, 2]}, "bndbox": [1, 2, 11, 32]}"#,
        )
        .unwrap();
        let k = read_keypoints(&image).unwrap().unwrap();
        assert_eq!(k.category, "cat");
        assert_eq!(k.points.len(), 2);
        assert_eq!(k.points[&0], [3.0, 4.5]);
        assert_eq!(k.points[&10], [1.0, 2.0]);
        assert_eq!(k.pck_scale(100, 100), 30.0);
        std::fs::write(&ann, "{\"kps\": 3}").unwrap();
        let err = read_keypoints(&image).unwrap_err().to_string();
        assert!(err.contains("0001.json"), "{err}");
        // Images elsewhere have no annotation.
        assert_eq!(annotation_path(Path::new("/tmp/a.png")), None);
    }
}
