//! Writing a generated dataset in SPair-71k's layout (see [`super`] for the format).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::creatures::{Category, View};
use super::scene::{
    render_instance, InstanceAnnotation, LABEL_BACKGROUND, LABEL_BODY, LABEL_OCCLUDER, LABEL_PART0,
};
use crate::error::{Error, Result, WithPath};

/// How images are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// `.jpg`, baseline JPEG at this quality (1-100), as SPair-71k.
    Jpeg { quality: u8 },
    /// `.png`, lossless.
    Png,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg { .. } => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub out: PathBuf,
    /// Images in all, categories taking turns (image i is of `categories[i % len]`).
    pub count: usize,
    pub seed: u64,
    /// Width and height in pixels.
    pub size: u32,
    /// Pairs in all, categories taking turns.
    pub pairs: usize,
    /// The `PairAnnotation/<split>/` folder the pairs go to (SPair uses trn, val, test).
    pub split: String,
    pub format: ImageFormat,
    pub categories: Vec<Category>,
}

impl SynthConfig {
    /// `count` images of all categories at 64x64 as JPEG (quality 95), `count` pairs in `test`.
    pub fn new(out: impl Into<PathBuf>, count: usize, seed: u64) -> Self {
        Self {
            out: out.into(),
            count,
            seed,
            size: 64,
            pairs: count,
            split: "test".into(),
            format: ImageFormat::Jpeg { quality: 95 },
            categories: Category::ALL.to_vec(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(Error::invalid("--count must be at least 1"));
        }
        if !(16..=1024).contains(&self.size) {
            return Err(Error::invalid(format!(
                "--size {} is out of range: use 16 to 1024 pixels",
                self.size
            )));
        }
        if self.categories.is_empty() {
            return Err(Error::invalid("no categories to generate"));
        }
        if self.split.is_empty()
            || !self
                .split
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::invalid(format!(
                "--split {:?} must be a plain name of letters, digits and _ (SPair uses trn, val, test)",
                self.split
            )));
        }
        // Categories take turns, so some category has two images only past one round.
        if self.pairs > 0 && self.count <= self.categories.len() {
            return Err(Error::invalid(format!(
                "--pairs {} needs at least two images of one category: --count {} must exceed the {} categories",
                self.pairs,
                self.count,
                self.categories.len()
            )));
        }
        if let ImageFormat::Jpeg { quality } = self.format {
            if !(1..=100).contains(&quality) {
                return Err(Error::invalid(format!(
                    "JPEG quality {quality} is out of range 1-100"
                )));
            }
        }
        Ok(())
    }
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct SynthSummary {
    pub images: usize,
    pub pairs: usize,
    /// Per category name: (images, pairs).
    pub per_category: BTreeMap<String, (usize, usize)>,
}

/// The name (without extension) of image `index` generated with `seed`. No `-` or `:`, which
/// separate the parts of SPair's pair file names.
pub fn image_stem(seed: u64, index: usize) -> String {
    format!("syn{seed}_{index:06}")
}

struct ImageRecord {
    name: String,
    annotation: InstanceAnnotation,
}

/// Generate the dataset described by `config` into `config.out`; `progress` hears how many of
/// the `config.count` images are written.
pub fn generate_dataset(
    config: &SynthConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<SynthSummary> {
    config.validate()?;
    let out = &config.out;
    let pair_dir = out.join("PairAnnotation").join(&config.split);
    if let Ok(entries) = fs::read_dir(&pair_dir) {
        let existing = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        if existing > 0 {
            return Err(Error::file(
                &pair_dir,
                format!(
                    "already holds {existing} pair annotations; choose another --split or an empty --out \
                     (images of different seeds can share a folder)"
                ),
            ));
        }
    }

    let mut summary = SynthSummary::default();
    let mut records: Vec<ImageRecord> = Vec::with_capacity(config.count);
    for index in 0..config.count {
        progress(index);
        let category = config.categories[index % config.categories.len()];
        let rendered = render_instance(config.seed, index as u64, category, config.size);
        let stem = image_stem(config.seed, index);
        let name = format!("{stem}.{}", config.format.extension());
        let cat = category.name();
        write_image(
            &out.join("JPEGImages").join(cat).join(&name),
            &rendered.image,
            config.format,
        )?;
        let mask_path = out.join("PartMasks").join(cat).join(format!("{stem}.png"));
        create_parent(&mask_path)?;
        rendered.labels.save(&mask_path).with_path(&mask_path)?;
        let ann_path = out
            .join("ImageAnnotation")
            .join(cat)
            .join(format!("{stem}.json"));
        write_json(
            &ann_path,
            &image_annotation_json(&name, config, index, &rendered.annotation),
        )?;
        summary.per_category.entry(cat.to_string()).or_default().0 += 1;
        records.push(ImageRecord {
            name,
            annotation: rendered.annotation,
        });
    }
    summary.images = records.len();

    write_json(
        &out.join("keypoints.json"),
        &keypoints_json(&config.categories),
    )?;
    let pair_names = write_pairs(config, &records, &pair_dir, &mut summary)?;
    let layout = out
        .join("Layout")
        .join("large")
        .join(format!("{}.txt", config.split));
    create_parent(&layout)?;
    let listing: String = pair_names.iter().map(|n| format!("{n}\n")).collect();
    fs::write(&layout, listing).with_path(&layout)?;
    Ok(summary)
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_path(dir)?;
    }
    Ok(())
}

fn write_image(path: &Path, image: &RgbImage, format: ImageFormat) -> Result<()> {
    create_parent(path)?;
    match format {
        ImageFormat::Png => image
            .save_with_format(path, image::ImageFormat::Png)
            .with_path(path),
        ImageFormat::Jpeg { quality } => {
            let file = fs::File::create(path).with_path(path)?;
            let mut writer = std::io::BufWriter::new(file);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, quality)
                .encode_image(image)
                .with_path(path)
        }
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    create_parent(path)?;
    let text = serde_json::to_string(value).with_path(path)?;
    fs::write(path, text + "\n").with_path(path)
}

/// Two decimals: sub-pixel, and stable text.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// VOC's pose words, as SPair's image annotations carry them.
fn pose_word(category: Category, mirror: bool) -> &'static str {
    match category.view() {
        View::Front => "Frontal",
        // Facing +x shows the right flank; mirrored, the left.
        View::Side if mirror => "Left",
        View::Side => "Right",
        View::Top => "Unspecified",
    }
}

fn image_annotation_json(
    name: &str,
    config: &SynthConfig,
    index: usize,
    ann: &InstanceAnnotation,
) -> Value {
    let kps: serde_json::Map<String, Value> = ann
        .keypoints
        .iter()
        .enumerate()
        .map(|(id, k)| {
            (
                id.to_string(),
                if k.visible {
                    json!([round2(k.x), round2(k.y)])
                } else {
                    Value::Null
                },
            )
        })
        .collect();
    json!({
        "filename": name,
        "src_database": "diffscope-synth",
        "src_annotation": "diffscope-synth",
        "src_image": "diffscope-synth",
        "image_width": config.size,
        "image_height": config.size,
        "image_depth": 3,
        "category": ann.category.name(),
        "pose": pose_word(ann.category, ann.mirror),
        "truncated": u8::from(ann.truncated),
        "occluded": u8::from(ann.occluded),
        "difficult": 0,
        "bndbox": ann.bndbox,
        "kps": kps,
        "azimuth_id": azimuth_id(ann.category, ann.mirror),
        "synth": {
            "seed": config.seed,
            "index": index,
            "mirror": ann.mirror,
            "rotation_deg": round2(ann.rotation_deg),
            "scale_px_per_unit": round2(ann.scale),
        },
    })
}

/// A coarse view bin of our own: 0 facing the viewer or seen from above, 2 facing image right,
/// 6 facing image left.
fn azimuth_id(category: Category, mirror: bool) -> u8 {
    match (category.view(), mirror) {
        (View::Side, false) => 2,
        (View::Side, true) => 6,
        _ => 0,
    }
}

fn keypoints_json(categories: &[Category]) -> Value {
    let mut per_category = serde_json::Map::new();
    for c in categories {
        let names: serde_json::Map<String, Value> = c
            .parts()
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), json!(n)))
            .collect();
        let mut labels = serde_json::Map::new();
        labels.insert(LABEL_BACKGROUND.to_string(), json!("background"));
        labels.insert(LABEL_OCCLUDER.to_string(), json!("occluder"));
        labels.insert(LABEL_BODY.to_string(), json!("body"));
        for (i, n) in c.parts().iter().enumerate() {
            labels.insert((LABEL_PART0 as usize + i).to_string(), json!(n));
        }
        let view = match c.view() {
            View::Front => "front: the creature faces the viewer; its left is on the image's right when not mirrored",
            View::Side => "side: faces image right and shows its right flank when not mirrored (left eye and fin hidden)",
            View::Top => "top: seen from above, head up; its left is on the image's left when not mirrored",
        };
        per_category.insert(
            c.name().to_string(),
            json!({ "keypoints": names, "view": view, "mask_labels": labels }),
        );
    }
    json!({
        "format": "diffscope-synth 1",
        "coordinates": "pixel indices: [0, 0] is the centre of the top-left pixel; bndbox [x1, y1, x2, y2] inclusive",
        "left_right": "left and right are the creature's own; a mirrored image swaps which drawn part is which",
        "categories": per_category,
    })
}

/// Difficulty levels as SPair's pair annotations carry them, by our own thresholds:
/// viewpoint 0/1/2 for a turn between the two of under 10, under 20, or more degrees (or a side
/// view facing opposite ways: 2); scale 0/1/2 for a ratio of the larger bbox sides under 1.25,
/// under 1.6, or more; truncation and occlusion 0 none, 1 source, 2 target, 3 both.
fn difficulty(src: &InstanceAnnotation, trg: &InstanceAnnotation) -> (u8, u8, u8, u8) {
    let turn = (src.rotation_deg - trg.rotation_deg).abs();
    let facing_differs = src.category.view() == View::Side && src.mirror != trg.mirror;
    let viewpoint = if facing_differs || turn >= 20.0 {
        2
    } else if turn >= 10.0 {
        1
    } else {
        0
    };
    let extent = |a: &InstanceAnnotation| {
        let [x1, y1, x2, y2] = a.bndbox;
        (x2.saturating_sub(x1)).max(y2.saturating_sub(y1)).max(1) as f64
    };
    let ratio = extent(src).max(extent(trg)) / extent(src).min(extent(trg));
    let scale = if ratio < 1.25 {
        0
    } else if ratio < 1.6 {
        1
    } else {
        2
    };
    let both = |a: bool, b: bool| u8::from(a) + 2 * u8::from(b);
    (
        viewpoint,
        scale,
        both(src.truncated, trg.truncated),
        both(src.occluded, trg.occluded),
    )
}

/// Sample pairs (two different images of a category, sharing at least one visible keypoint) and
/// write them; returns their names (file names without `.json`).
fn write_pairs(
    config: &SynthConfig,
    records: &[ImageRecord],
    pair_dir: &Path,
    summary: &mut SynthSummary,
) -> Result<Vec<String>> {
    let mut by_category: BTreeMap<Category, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_category
            .entry(r.annotation.category)
            .or_default()
            .push(i);
    }
    let pairable: Vec<Category> = config
        .categories
        .iter()
        .copied()
        .filter(|c| by_category.get(c).is_some_and(|v| v.len() >= 2))
        .collect();
    if config.pairs > 0 && pairable.is_empty() {
        return Err(Error::invalid(format!(
            "--pairs {} needs at least two images of one category; --count {} gives fewer",
            config.pairs, config.count
        )));
    }
    fs::create_dir_all(pair_dir).with_path(pair_dir)?;
    // Stream u64::MAX is the pairs' own; image i uses stream i.
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(u64::MAX);
    let mut used = std::collections::BTreeSet::new();
    let mut names = Vec::new();
    for k in 0..config.pairs {
        let Some(&category) = pairable.get(k % pairable.len().max(1)) else {
            break;
        };
        let Some(members) = by_category.get(&category) else {
            continue;
        };
        let mut chosen = None;
        for _ in 0..100 {
            let s = members[rng.random_range(0..members.len() as u32) as usize];
            let t = members[rng.random_range(0..members.len() as u32) as usize];
            if s == t || used.contains(&(s, t)) {
                continue;
            }
            let common = common_keypoints(&records[s].annotation, &records[t].annotation);
            if !common.is_empty() {
                chosen = Some((s, t, common));
                break;
            }
        }
        let Some((s, t, common)) = chosen else {
            continue;
        };
        used.insert((s, t));
        let pair_id = names.len() + 1;
        let (src, trg) = (&records[s], &records[t]);
        let stem = |n: &str| {
            n.rsplit_once('.')
                .map_or(n.to_string(), |(a, _)| a.to_string())
        };
        let name = format!(
            "{pair_id:06}-{}-{}:{}",
            stem(&src.name),
            stem(&trg.name),
            category.name()
        );
        let path = pair_dir.join(format!("{name}.json"));
        write_json(&path, &pair_json(pair_id, config.size, src, trg, &common))?;
        summary
            .per_category
            .entry(category.name().to_string())
            .or_default()
            .1 += 1;
        names.push(name);
    }
    summary.pairs = names.len();
    Ok(names)
}

/// Keypoint ids visible in both images.
fn common_keypoints(a: &InstanceAnnotation, b: &InstanceAnnotation) -> Vec<usize> {
    a.keypoints
        .iter()
        .zip(&b.keypoints)
        .enumerate()
        .filter(|(_, (p, q))| p.visible && q.visible)
        .map(|(i, _)| i)
        .collect()
}

fn pair_json(
    pair_id: usize,
    size: u32,
    src: &ImageRecord,
    trg: &ImageRecord,
    common: &[usize],
) -> Value {
    let kps = |r: &ImageRecord| -> Vec<[f64; 2]> {
        common
            .iter()
            .filter_map(|&i| r.annotation.keypoints.get(i))
            .map(|k| [round2(k.x), round2(k.y)])
            .collect()
    };
    let (viewpoint, scale, truncation, occlusion) = difficulty(&src.annotation, &trg.annotation);
    json!({
        "pair_id": pair_id,
        "src_imname": src.name,
        "trg_imname": trg.name,
        "src_imsize": [size, size, 3],
        "trg_imsize": [size, size, 3],
        "src_bndbox": src.annotation.bndbox,
        "trg_bndbox": trg.annotation.bndbox,
        "category": src.annotation.category.name(),
        "src_kps": kps(src),
        "trg_kps": kps(trg),
        "kps_ids": common.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "mirror": u8::from(src.annotation.mirror != trg.annotation.mirror),
        "viewpoint_variation": viewpoint,
        "scale_variation": scale,
        "truncation": truncation,
        "occlusion": occlusion,
    })
}
