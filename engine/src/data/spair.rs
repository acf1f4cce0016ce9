//! Reader of datasets in SPair-71k's layout: SPair-71k itself, or the creatures of
//! [`super::synth`].
//!
//! ```text
//! <root>/JPEGImages/<category>/<image>            (.jpg in SPair; the annotations name the file)
//! <root>/ImageAnnotation/<category>/<stem>.json   (optional: bndbox, kps by id, ...)
//! <root>/PairAnnotation/<split>/<id>-<src>-<trg>:<category>.json
//! <root>/Layout/large/<split>.txt                 (optional; pairs are listed from the folder)
//! <root>/keypoints.json                           (optional, ours: keypoint names per category)
//! ```
//! A pair annotation holds `src_imname`, `trg_imname`, `src_imsize`/`trg_imsize`
//! ([width, height, channels]), `src_bndbox`/`trg_bndbox` ([x1, y1, x2, y2]), `src_kps`/`trg_kps`
//! (lists of [x, y] in pixels of the original image, paired by index), `category`, and
//! optionally `pair_id`, `kps_ids`, `mirror`, `viewpoint_variation`, `scale_variation`,
//! `truncation`, `occlusion`. Numbers may be integers (SPair) or decimals (ours).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result, WithPath};

/// A dataset folder in SPair-71k's layout.
#[derive(Clone, Debug)]
pub struct SpairDataset {
    root: PathBuf,
}

/// Which pairs to list.
#[derive(Clone, Debug)]
pub struct PairQuery {
    /// `trn`, `val` or `test` in SPair-71k.
    pub split: String,
    /// Only this category.
    pub category: Option<String>,
    /// At most this many (the first ones in name order, which is pair id order).
    pub limit: Option<usize>,
}

impl PairQuery {
    pub fn split(split: impl Into<String>) -> Self {
        Self {
            split: split.into(),
            category: None,
            limit: None,
        }
    }
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// A pair as listed: its name (the annotation's file stem) and what the name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairEntry {
    /// `<id>-<src>-<trg>:<category>`.
    pub name: String,
    pub category: String,
    pub annotation: PathBuf,
}

/// Difficulty flags of a SPair pair (absent fields read as None).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairFlags {
    pub mirror: Option<i64>,
    pub viewpoint_variation: Option<i64>,
    pub scale_variation: Option<i64>,
    pub truncation: Option<i64>,
    pub occlusion: Option<i64>,
}

/// One annotated pair, with its images resolved (and checked to exist).
#[derive(Clone, Debug, PartialEq)]
pub struct PairAnnotation {
    pub name: String,
    pub pair_id: Option<i64>,
    pub category: String,
    pub src_imname: String,
    pub trg_imname: String,
    pub src_image: PathBuf,
    pub trg_image: PathBuf,
    /// [width, height] (SPair's third entry, channels, is dropped).
    pub src_imsize: [u32; 2],
    pub trg_imsize: [u32; 2],
    /// [x1, y1, x2, y2].
    pub src_bndbox: [f64; 4],
    pub trg_bndbox: [f64; 4],
    /// Paired by index: `src_kps[i]` corresponds to `trg_kps[i]`.
    pub src_kps: Vec<[f64; 2]>,
    pub trg_kps: Vec<[f64; 2]>,
    /// Keypoint ids of the points (strings, as SPair writes them), when given.
    pub kps_ids: Option<Vec<String>>,
    pub flags: PairFlags,
}

/// One image's annotation (`ImageAnnotation/<category>/<stem>.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageAnnotation {
    pub filename: String,
    pub category: String,
    pub image_width: u32,
    pub image_height: u32,
    pub bndbox: [f64; 4],
    /// Keypoint id -> position, None where not visible; ordered by numeric id.
    pub kps: BTreeMap<u32, Option<[f64; 2]>>,
}

impl SpairDataset {
    /// Open a dataset folder: it must hold `PairAnnotation/` and `JPEGImages/`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::file(&root, "dataset folder not found"));
        }
        for needed in ["PairAnnotation", "JPEGImages"] {
            if !root.join(needed).is_dir() {
                return Err(Error::file(
                    &root,
                    format!(
                        "not a SPair-71k-layout dataset: no {needed}/ folder \
                         (expected JPEGImages/, ImageAnnotation/ and PairAnnotation/<split>/)"
                    ),
                ));
            }
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The split folders under `PairAnnotation/`, sorted.
    pub fn splits(&self) -> Result<Vec<String>> {
        subfolders(&self.root.join("PairAnnotation"))
    }

    /// The category folders under `JPEGImages/`, sorted.
    pub fn categories(&self) -> Result<Vec<String>> {
        subfolders(&self.root.join("JPEGImages"))
    }

    /// Where an image named in an annotation lives.
    pub fn image_path(&self, category: &str, imname: &str) -> PathBuf {
        self.root.join("JPEGImages").join(category).join(imname)
    }

    /// The pairs of a split, in name order (SPair's names start with the zero-padded pair id),
    /// filtered by category and limited as asked. Errors when nothing matches.
    pub fn list_pairs(&self, query: &PairQuery) -> Result<Vec<PairEntry>> {
        let dir = self.root.join("PairAnnotation").join(&query.split);
        if !dir.is_dir() {
            let splits = self.splits().unwrap_or_default();
            return Err(Error::file(
                &dir,
                format!(
                    "no split {:?} (splits here: {})",
                    query.split,
                    list(&splits)
                ),
            ));
        }
        let mut all = Vec::new();
        for entry in fs::read_dir(&dir).with_path(&dir)? {
            let path = entry.with_path(&dir)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let Some((_, category)) = name.rsplit_once(':') else {
                return Err(Error::file(
                    &path,
                    "pair file name is not <id>-<src>-<trg>:<category>.json",
                ));
            };
            all.push(PairEntry {
                category: category.to_string(),
                name,
                annotation: path,
            });
        }
        if all.is_empty() {
            return Err(Error::file(
                &dir,
                "no pair annotations (*.json) in this split",
            ));
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let mut pairs: Vec<PairEntry> = match &query.category {
            Some(c) => all.iter().filter(|p| &p.category == c).cloned().collect(),
            None => all.clone(),
        };
        if pairs.is_empty() {
            let present: Vec<String> = all
                .iter()
                .map(|p| p.category.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let asked = query.category.as_deref().unwrap_or_default();
            return Err(Error::file(
                &dir,
                format!(
                    "no pairs of category {asked:?} (categories here: {})",
                    list(&present)
                ),
            ));
        }
        if let Some(limit) = query.limit {
            pairs.truncate(limit);
        }
        Ok(pairs)
    }

    /// Read and check one pair annotation; its images must exist.
    pub fn read_pair(&self, entry: &PairEntry) -> Result<PairAnnotation> {
        let path = &entry.annotation;
        let v = read_json(path)?;
        let f = Fields { path, value: &v };
        let category = f.string("category")?;
        let src_imname = f.string("src_imname")?;
        let trg_imname = f.string("trg_imname")?;
        let src_kps = f.points("src_kps")?;
        let trg_kps = f.points("trg_kps")?;
        if src_kps.len() != trg_kps.len() {
            return Err(Error::file(
                path,
                format!(
                    "`src_kps` has {} points but `trg_kps` has {}: they pair by index",
                    src_kps.len(),
                    trg_kps.len()
                ),
            ));
        }
        let kps_ids = f
            .optional("kps_ids")
            .map(|_| f.id_list("kps_ids"))
            .transpose()?;
        if let Some(ids) = &kps_ids {
            if ids.len() != src_kps.len() {
                return Err(Error::file(
                    path,
                    format!(
                        "`kps_ids` has {} ids but `src_kps` has {} points",
                        ids.len(),
                        src_kps.len()
                    ),
                ));
            }
        }
        let src_image = self.image_path(&category, &src_imname);
        let trg_image = self.image_path(&category, &trg_imname);
        for (image, field) in [(&src_image, "src_imname"), (&trg_image, "trg_imname")] {
            if !image.is_file() {
                return Err(Error::file(
                    image,
                    format!("image named by `{field}` in {} is missing", path.display()),
                ));
            }
        }
        Ok(PairAnnotation {
            name: entry.name.clone(),
            pair_id: f.optional_int("pair_id")?,
            src_imsize: f.imsize("src_imsize")?,
            trg_imsize: f.imsize("trg_imsize")?,
            src_bndbox: f.bndbox("src_bndbox")?,
            trg_bndbox: f.bndbox("trg_bndbox")?,
            flags: PairFlags {
                mirror: f.optional_int("mirror")?,
                viewpoint_variation: f.optional_int("viewpoint_variation")?,
                scale_variation: f.optional_int("scale_variation")?,
                truncation: f.optional_int("truncation")?,
                occlusion: f.optional_int("occlusion")?,
            },
            category,
            src_imname,
            trg_imname,
            src_image,
            trg_image,
            src_kps,
            trg_kps,
            kps_ids,
        })
    }

    /// List and read the pairs of a query.
    pub fn load_pairs(&self, query: &PairQuery) -> Result<Vec<PairAnnotation>> {
        self.list_pairs(query)?
            .iter()
            .map(|e| self.read_pair(e))
            .collect()
    }

    /// Read `ImageAnnotation/<category>/<stem of imname>.json`.
    pub fn read_image_annotation(&self, category: &str, imname: &str) -> Result<ImageAnnotation> {
        let stem = Path::new(imname)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(imname);
        let path = self
            .root
            .join("ImageAnnotation")
            .join(category)
            .join(format!("{stem}.json"));
        let v = read_json(&path)?;
        let f = Fields {
            path: &path,
            value: &v,
        };
        let kps = f.kps()?;
        Ok(ImageAnnotation {
            filename: f.string("filename")?,
            category: f.string("category")?,
            image_width: f.uint("image_width")?,
            image_height: f.uint("image_height")?,
            bndbox: f.bndbox("bndbox")?,
            kps,
        })
    }

    /// Keypoint names per category from our `keypoints.json` (id string -> name), if present.
    pub fn keypoint_names(&self) -> Result<Option<BTreeMap<String, BTreeMap<u32, String>>>> {
        let path = self.root.join("keypoints.json");
        if !path.is_file() {
            return Ok(None);
        }
        let v = read_json(&path)?;
        let bad = || {
            Error::file(
                &path,
                "field `categories`: expected {category: {keypoints: {id: name}}}",
            )
        };
        let categories = v
            .get("categories")
            .and_then(Value::as_object)
            .ok_or_else(bad)?;
        let mut out = BTreeMap::new();
        for (category, entry) in categories {
            let names = entry
                .get("keypoints")
                .and_then(Value::as_object)
                .ok_or_else(bad)?;
            let mut by_id = BTreeMap::new();
            for (id, name) in names {
                let id = id.parse::<u32>().map_err(|_| bad())?;
                by_id.insert(id, name.as_str().ok_or_else(bad)?.to_string());
            }
            out.insert(category.clone(), by_id);
        }
        Ok(Some(out))
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_path(dir)? {
        let entry = entry.with_path(dir)?;
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// What the workbench needs from an image annotation file: its keypoints and, where given, its
/// category and bounding box. Lenient: SPair's other fields may be absent.
#[derive(Clone, Debug, PartialEq)]
pub struct KeypointFile {
    pub category: Option<String>,
    pub bndbox: Option<[f64; 4]>,
    /// Keypoint id -> position, None where not visible.
    pub kps: BTreeMap<u32, Option<[f64; 2]>>,
}

/// Read the keypoints (and category and box, if present) of one `ImageAnnotation` file.
pub fn read_keypoint_file(path: &Path) -> Result<KeypointFile> {
    let v = read_json(path)?;
    let f = Fields { path, value: &v };
    Ok(KeypointFile {
        category: f
            .optional("category")
            .map(|_| f.string("category"))
            .transpose()?,
        bndbox: f
            .optional("bndbox")
            .map(|_| f.bndbox("bndbox"))
            .transpose()?,
        kps: f.kps()?,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_path(path)?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

fn point(v: &Value) -> Option<[f64; 2]> {
    match v.as_array()?.as_slice() {
        [x, y] => Some([number(x)?, number(y)?]),
        _ => None,
    }
}

/// Field access with errors that name the file and the field.
struct Fields<'a> {
    path: &'a Path,
    value: &'a Value,
}

impl Fields<'_> {
    fn bad(&self, field: &str, expected: &str) -> Error {
        Error::file(self.path, format!("field `{field}`: expected {expected}"))
    }

    fn optional(&self, field: &str) -> Option<&Value> {
        self.value.get(field).filter(|v| !v.is_null())
    }

    fn get(&self, field: &str) -> Result<&Value> {
        self.optional(field)
            .ok_or_else(|| Error::file(self.path, format!("missing field `{field}`")))
    }

    fn string(&self, field: &str) -> Result<String> {
        self.get(field)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.bad(field, "a string"))
    }

    fn uint(&self, field: &str) -> Result<u32> {
        let v = self.get(field)?;
        number(v)
            .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x <= u32::MAX as f64)
            .map(|x| x as u32)
            .ok_or_else(|| self.bad(field, "a whole number"))
    }

    fn optional_int(&self, field: &str) -> Result<Option<i64>> {
        match self.optional(field) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.bad(field, "an integer")),
        }
    }

    fn points(&self, field: &str) -> Result<Vec<[f64; 2]>> {
        let items = self
            .get(field)?
            .as_array()
            .ok_or_else(|| self.bad(field, "a list of [x, y]"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                point(p)
                    .ok_or_else(|| self.bad(field, &format!("a list of [x, y]; item {i} is {p}")))
            })
            .collect()
    }

    /// `kps`: keypoint id -> `[x, y]`, or null where the point is not visible.
    fn kps(&self) -> Result<BTreeMap<u32, Option<[f64; 2]>>> {
        let Some(obj) = self.get("kps")?.as_object() else {
            return Err(self.bad("kps", "an object from keypoint id to [x, y] or null"));
        };
        let mut kps = BTreeMap::new();
        for (id, p) in obj {
            let Ok(num) = id.parse::<u32>() else {
                return Err(self.bad("kps", &format!("numeric keypoint ids, not {id:?}")));
            };
            let point = if p.is_null() {
                None
            } else {
                Some(
                    point(p)
                        .ok_or_else(|| self.bad("kps", &format!("[x, y] or null for id {id}")))?,
                )
            };
            kps.insert(num, point);
        }
        Ok(kps)
    }

    fn bndbox(&self, field: &str) -> Result<[f64; 4]> {
        let items = self
            .get(field)?
            .as_array()
            .ok_or_else(|| self.bad(field, "[x1, y1, x2, y2]"))?;
        match items
            .iter()
            .map(number)
            .collect::<Option<Vec<f64>>>()
            .as_deref()
        {
            Some(&[x1, y1, x2, y2]) if x2 >= x1 && y2 >= y1 => Ok([x1, y1, x2, y2]),
            _ => Err(self.bad(field, "[x1, y1, x2, y2] with x1 <= x2 and y1 <= y2")),
        }
    }

    fn imsize(&self, field: &str) -> Result<[u32; 2]> {
        let items = self
            .get(field)?
            .as_array()
            .ok_or_else(|| self.bad(field, "[width, height, channels]"))?;
        let whole =
            |v: &Value| number(v).filter(|x| *x > 0.0 && x.fract() == 0.0 && *x <= u32::MAX as f64);
        match items.as_slice() {
            [w, h] | [w, h, _] => match (whole(w), whole(h)) {
                (Some(w), Some(h)) => Ok([w as u32, h as u32]),
                _ => Err(self.bad(field, "[width, height, channels] of positive whole numbers")),
            },
            _ => Err(self.bad(field, "[width, height, channels]")),
        }
    }

    /// Ids as strings; SPair writes strings, some tools integers.
    fn id_list(&self, field: &str) -> Result<Vec<String>> {
        let items = self
            .get(field)?
            .as_array()
            .ok_or_else(|| self.bad(field, "a list of keypoint ids"))?;
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) if n.is_u64() => Ok(n.to_string()),
                _ => Err(self.bad(field, &format!("a list of keypoint ids; found {v}"))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    const PAIR: &str = r#"{"pair_id": 3, "src_imname": "a.jpg", "trg_imname": "b.jpg",
        "src_imsize": [40, 30, 3], "trg_imsize": [50, 20, 3],
        "src_bndbox": [1, 2, 30, 25], "trg_bndbox": [0, 0, 49, 19], "category": "dog",
        "src_kps": [[3, 4], [10.5, 12]], "trg_kps": [[5, 6], [7, 8]], "kps_ids": ["0", "4"],
        "mirror": 0, "viewpoint_variation": 1, "scale_variation": 0, "truncation": 2, "occlusion": 0}"#;

    fn dataset(pair: &str) -> (tempfile::TempDir, SpairDataset) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("JPEGImages/dog/a.jpg"), "x");
        write(&root.join("JPEGImages/dog/b.jpg"), "x");
        write(&root.join("PairAnnotation/test/000003-a-b:dog.json"), pair);
        let ds = SpairDataset::open(root).unwrap();
        (dir, ds)
    }

    #[test]
    fn reads_a_pair() {
        let (_dir, ds) = dataset(PAIR);
        let pairs = ds.load_pairs(&PairQuery::split("test")).unwrap();
        assert_eq!(pairs.len(), 1);
        let p = &pairs[0];
        assert_eq!(p.name, "000003-a-b:dog");
        assert_eq!(p.pair_id, Some(3));
        assert_eq!(p.src_imsize, [40, 30]);
        assert_eq!(p.trg_bndbox, [0.0, 0.0, 49.0, 19.0]);
        assert_eq!(p.src_kps, vec![[3.0, 4.0], [10.5, 12.0]]);
        assert_eq!(p.kps_ids, Some(vec!["0".to_string(), "4".to_string()]));
        assert_eq!(p.flags.truncation, Some(2));
        assert!(p.src_image.ends_with("JPEGImages/dog/a.jpg"));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let broken = PAIR.replace(
            r#""trg_kps": [[5, 6], [7, 8]]"#,
            r#""trg_kps": [[5, 6], [7]]"#,
        );
        let (_dir, ds) = dataset(&broken);
        let err = ds
            .load_pairs(&PairQuery::split("test"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("000003-a-b:dog.json")
                && err.contains("`trg_kps`")
                && err.contains("item 1"),
            "{err}"
        );

        let unequal = PAIR.replace(r#""trg_kps": [[5, 6], [7, 8]]"#, r#""trg_kps": [[5, 6]]"#);
        let (_dir, ds) = dataset(&unequal);
        let err = ds
            .load_pairs(&PairQuery::split("test"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`src_kps` has 2 points but `trg_kps` has 1"),
            "{err}"
        );

        let missing = PAIR.replace(r#""src_bndbox": [1, 2, 30, 25], "#, "");
        let (_dir, ds) = dataset(&missing);
        let err = ds
            .load_pairs(&PairQuery::split("test"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `src_bndbox`"), "{err}");

        let (_dir, ds) = dataset("{not json");
        let err = ds
            .load_pairs(&PairQuery::split("test"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("000003-a-b:dog.json") && err.contains("not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn missing_images_splits_and_categories_are_reported() {
        let (dir, ds) = dataset(PAIR);
        fs::remove_file(dir.path().join("JPEGImages/dog/b.jpg")).unwrap();
        let err = ds
            .load_pairs(&PairQuery::split("test"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.jpg") && err.contains("`trg_imname`") && err.contains("missing"),
            "{err}"
        );

        let err = ds
            .list_pairs(&PairQuery::split("trn"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no split \"trn\"") && err.contains("test"),
            "{err}"
        );
        let err = ds
            .list_pairs(&PairQuery::split("test").category("cat"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no pairs of category \"cat\"") && err.contains("dog"),
            "{err}"
        );

        let empty = tempfile::tempdir().unwrap();
        let err = SpairDataset::open(empty.path()).unwrap_err().to_string();
        assert!(err.contains("not a SPair-71k-layout dataset"), "{err}");
        let err = SpairDataset::open(empty.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
