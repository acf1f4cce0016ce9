//! Attention maps of an image, extracted the way features are: the recipe's passes
//! ([`super::recipe::run_ensemble`]) with the probabilities of the chosen attention modules
//! recorded, averaged over the noise draws. The analysis aggregates these
//! (`analysis::recipes::attention`); the files hold them as they are.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::DType;

use super::extract::{describe, model_input, ExtractSettings};
use super::recipe::{run_ensemble, ProgressFn, UNetRequest};
use crate::error::{Error, Result};
use crate::io::image::load_rgb;
use crate::io::safetensors::write_f32;
use crate::model::attention_probs::{
    AttentionInfo, AttentionKind, AttentionRequest, QueryRows, RecordedAttention,
};
use crate::model::clip::PromptToken;
use crate::model::conditioning::Conditioning;
use crate::model::pipeline::{DiffusionModel, PromptSource};

/// One module's attention probabilities, averaged over the ensemble.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMap {
    /// The module's diffusers path.
    pub module: String,
    pub kind: AttentionKind,
    pub heads: usize,
    /// The query grid `(height, width)`; queries are its cells in row-major order (`h·W + w`).
    pub grid: (usize, usize),
    /// Keys per row: the grid's cells (self-attention) or the prompt's tokens (cross-attention).
    pub keys: usize,
    /// The query whose row this is, when only one row was kept.
    pub row: Option<usize>,
    /// `[heads, rows, keys]`, row-major.
    pub probs: Arc<Vec<f32>>,
}

impl AttentionMap {
    /// From what a pass recorded (probabilities already averaged over the draws).
    pub fn from_recorded(module: &str, recorded: &RecordedAttention) -> Result<Self> {
        let (heads, rows, keys) = recorded.probs.dims3()?;
        let probs = recorded
            .probs
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let map = Self {
            module: module.to_string(),
            kind: recorded.kind,
            heads,
            grid: recorded.grid,
            keys,
            row: recorded.row,
            probs: Arc::new(probs),
        };
        if rows != map.rows() {
            return Err(Error::invalid(format!(
                "attention `{module}`: {rows} rows recorded for a {}x{} grid",
                map.grid.0, map.grid.1
            )));
        }
        Ok(map)
    }

    /// Rows held: every query's, or one.
    pub fn rows(&self) -> usize {
        match self.row {
            Some(_) => 1,
            None => self.grid.0 * self.grid.1,
        }
    }

    /// The shape in files: `[heads, queries, keys]`, or `[heads, keys]` for one query's row.
    pub fn file_shape(&self) -> Vec<usize> {
        match self.row {
            Some(_) => vec![self.heads, self.keys],
            None => vec![self.heads, self.rows(), self.keys],
        }
    }

    /// Head `head`'s probabilities from `query` to every key; None when that row is not held.
    pub fn row_of(&self, head: usize, query: usize) -> Option<&[f32]> {
        let r = match self.row {
            Some(kept) if kept == query => 0,
            Some(_) => return None,
            None if query < self.rows() => query,
            None => return None,
        };
        let start = (head * self.rows() + r) * self.keys;
        self.probs.get(start..start + self.keys)
    }

    /// Head `head`'s probabilities to `key` from every query, row-major on the grid; None unless
    /// every row is held.
    pub fn column(&self, head: usize, key: usize) -> Option<Vec<f32>> {
        if self.row.is_some() || head >= self.heads || key >= self.keys {
            return None;
        }
        let rows = self.rows();
        let plane = &self.probs[head * rows * self.keys..(head + 1) * rows * self.keys];
        Some(plane.iter().skip(key).step_by(self.keys).copied().collect())
    }
}

/// The attention modules `requested` names, in forward order: `all`, a module's own path, or
/// any path that holds attention modules (`up_blocks.1`, `up_blocks.1.attentions.0`). A name
/// that holds none is an error naming it.
pub fn expand_attention_modules(
    requested: &[String],
    offered: &[AttentionInfo],
) -> Result<Vec<String>> {
    let mut chosen = vec![false; offered.len()];
    for name in requested.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let inside = |a: &AttentionInfo| {
            name == "all" || a.name == name || a.name.starts_with(&format!("{name}."))
        };
        let mut any = false;
        for (i, a) in offered.iter().enumerate() {
            if inside(a) {
                chosen[i] = true;
                any = true;
            }
        }
        if !any {
            let names: Vec<&str> = offered.iter().map(|a| a.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "`{name}` has no attention module. This model's attention modules: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    let modules: Vec<String> = (offered.iter().zip(&chosen))
        .filter(|(_, &c)| c)
        .map(|(a, _)| a.name.clone())
        .collect();
    if modules.is_empty() {
        return Err(Error::invalid("no attention module requested"));
    }
    Ok(modules)
}

/// The kept self-attention rows for a point in image pixels (integers at pixel centres) of an
/// image `(width, height)`: the row of the cell under it in each module's grid.
pub fn rows_at_point(point: Option<[f32; 2]>, (width, height): (u32, u32)) -> Result<QueryRows> {
    let Some([x, y]) = point else {
        return Ok(QueryRows::All);
    };
    let inside = |v: f32, n: u32| v.is_finite() && v >= -0.5 && v <= n as f32 - 0.5;
    if !(inside(x, width) && inside(y, height)) {
        return Err(Error::invalid(format!(
            "the point ({x}, {y}) is outside the {width}x{height} image (x in [-0.5, {}], y in [-0.5, {}])",
            width as f32 - 0.5,
            height as f32 - 0.5
        )));
    }
    Ok(QueryRows::At {
        x: (x + 0.5) / width as f32,
        y: (y + 0.5) / height as f32,
    })
}

/// Bytes the maps of `request` take for a UNet input of `(height, width)` and a text of
/// `tokens`, per module in forward order, with each map's shape `[heads, rows, keys]`.
pub fn attention_bytes(
    offered: &[AttentionInfo],
    request: &AttentionRequest,
    (height, width): (usize, usize),
    tokens: usize,
) -> Vec<(String, [usize; 3], u64)> {
    offered
        .iter()
        .filter(|a| request.modules.contains(&a.name))
        .map(|a| {
            let s = a.stride.max(1);
            let cells = height.div_ceil(s) * width.div_ceil(s);
            let (rows, keys) = match (a.kind, request.self_rows) {
                (AttentionKind::CrossAttention, _) => (cells, tokens),
                (AttentionKind::SelfAttention, QueryRows::All) => (cells, cells),
                (AttentionKind::SelfAttention, QueryRows::At { .. }) => (1, cells),
            };
            let shape = [a.heads, rows, keys];
            (a.name.clone(), shape, (a.heads * rows * keys * 4) as u64)
        })
        .collect()
}

/// Refuse a request whose maps would not fit in `budget` bytes (the averaged maps and the
/// running sum of the draws), naming the largest maps.
pub fn check_attention_fits(
    offered: &[AttentionInfo],
    request: &AttentionRequest,
    input: (usize, usize),
    tokens: usize,
    budget: u64,
) -> Result<()> {
    let mut sizes = attention_bytes(offered, request, input, tokens);
    let total: u64 = sizes.iter().map(|s| s.2).sum();
    if 2 * total <= budget {
        return Ok(());
    }
    sizes.sort_by_key(|s| std::cmp::Reverse(s.2));
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let largest: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(name, shape, bytes)| format!("{name} {shape:?} ({:.2} GiB)", gib(*bytes)))
        .collect();
    let hint = if matches!(request.self_rows, QueryRows::All) {
        "Ask for fewer layers, a smaller --size, or one point's self-attention row (--point X,Y)"
    } else {
        "Ask for fewer layers or a smaller --size"
    };
    Err(Error::invalid(format!(
        "the attention maps asked for would take {:.2} GiB, {:.2} GiB with the running sum over the \
         draws: more than the {:.2} GiB this device can give them. The largest: {}. {hint}",
        gib(total),
        gib(2 * total),
        gib(budget),
        largest.join(", ")
    )))
}

/// What `extract_attention` gives.
pub struct AttentionExtraction {
    /// In forward order.
    pub maps: Vec<AttentionMap>,
    /// The prompt's tokens (None for prompt embeddings or an unconditional model).
    pub tokens: Option<Vec<PromptToken>>,
    /// The image size the model saw, `(width, height)`.
    pub size: (u32, u32),
    /// Every setting, as strings, for the files' metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The attention maps of `modules` for an image: the recipe of `settings` (its taps are
/// ignored), self-attention rows only at `point` when given (image pixels after resizing).
pub fn extract_attention(
    model: &DiffusionModel,
    image_path: &Path,
    settings: &ExtractSettings,
    modules: &[String],
    point: Option<[f32; 2]>,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<AttentionExtraction> {
    model.schedule.check_timestep(settings.t)?;
    let (x, size) = model_input(model, load_rgb(image_path)?, settings.size, image_path)?;
    let request = AttentionRequest {
        modules: modules.to_vec(),
        self_rows: rows_at_point(point, size)?,
    };
    let context = model
        .condition(&settings.prompt)?
        .map(|c| c.at_size(size, settings.time_ids));
    let stride = model.summary().input_stride;
    let input = (size.1 as usize / stride, size.0 as usize / stride);
    // Refuse what does not fit before the encode.
    check_attention_fits_on(model, &request, input, context.as_ref())?;
    let latents = model.encode(&x)?;
    let maps = attention_from_latents(
        model,
        &latents,
        context.as_ref(),
        settings,
        &request,
        cancel,
        progress,
    )?;
    let tokens = match &settings.prompt {
        PromptSource::Text(p) => model.prompt_tokens(p)?,
        PromptSource::Embeddings { .. } => None,
    };
    let metadata = attention_metadata(
        model,
        image_path,
        size,
        settings,
        &request,
        point,
        tokens.as_deref(),
    );
    Ok(AttentionExtraction {
        maps,
        tokens,
        size,
        metadata,
    })
}

/// [`check_attention_fits`] against what `model`'s device can give, for its text `context`.
pub fn check_attention_fits_on(
    model: &DiffusionModel,
    request: &AttentionRequest,
    input: (usize, usize),
    context: Option<&Conditioning>,
) -> Result<()> {
    let offered = model.unet.attention_modules();
    crate::model::attention_probs::validate_attention(&request.modules, &offered)?;
    let tokens = context.map_or(Ok(0), |c| c.context.dim(1))?;
    let budget = crate::device::work_budget(&model.device);
    check_attention_fits(&offered, request, input, tokens, budget)
}

/// The attention maps of `request` (in its order) from a clean latent `[1,C,h,w]`: the recipe's
/// passes at `settings`' t with its noise (its taps are ignored), averaged over the draws.
pub fn attention_from_latents(
    model: &DiffusionModel,
    latents: &candle_core::Tensor,
    context: Option<&Conditioning>,
    settings: &ExtractSettings,
    request: &AttentionRequest,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<Vec<AttentionMap>> {
    let (_, _, h, w) = latents.dims4()?;
    check_attention_fits_on(model, request, (h, w), context)?;
    let unet_request = UNetRequest {
        t: settings.t,
        taps: vec![],
        noise: settings.noise.clone(),
    };
    let outputs = run_ensemble(
        &model.unet,
        &model.schedule,
        std::slice::from_ref(latents),
        context,
        &unet_request,
        Some(request),
        cancel,
        progress,
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Error::invalid("the recipe ran no pass"))?;
    request
        .modules
        .iter()
        .map(|m| {
            let recorded = outputs.attention.get(m).ok_or_else(|| {
                Error::invalid(format!("the UNet never ran attention module `{m}`"))
            })?;
            AttentionMap::from_recorded(m, recorded)
        })
        .collect()
}

/// The settings of attention maps as strings, for the files' metadata.
pub fn attention_metadata(
    model: &DiffusionModel,
    image_path: &Path,
    size: (u32, u32),
    settings: &ExtractSettings,
    request: &AttentionRequest,
    point: Option<[f32; 2]>,
    tokens: Option<&[PromptToken]>,
) -> BTreeMap<String, String> {
    let unet_request = UNetRequest {
        t: settings.t,
        taps: vec![],
        noise: settings.noise.clone(),
    };
    let mut metadata = describe(model, image_path, size, settings, &unet_request);
    metadata.remove("taps");
    metadata.insert("attention_modules".into(), request.modules.join(","));
    metadata.insert(
        "probabilities".into(),
        "softmax(q k^T / sqrt(head_dim)) as each module computes it, averaged over the draws; \
         [heads, queries, keys], queries row-major (h*W + w) on the module's grid"
            .into(),
    );
    if let (Some([x, y]), QueryRows::At { .. }) = (point, request.self_rows) {
        metadata.insert("point".into(), format!("{x},{y}"));
        metadata.insert(
            "self_attention".into(),
            "the row [heads, keys] of the query cell under the point".into(),
        );
    }
    if let Some(tokens) = tokens {
        let texts: Vec<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
        metadata.insert(
            "tokens".into(),
            serde_json::to_string(&texts).unwrap_or_default(),
        );
    }
    metadata
}

/// One float32 tensor per module under its diffusers path (see [`AttentionMap::file_shape`]),
/// the settings in `__metadata__`.
pub fn write_attention(
    path: &Path,
    maps: &[AttentionMap],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let shapes: Vec<Vec<usize>> = maps.iter().map(AttentionMap::file_shape).collect();
    let tensors = maps
        .iter()
        .zip(&shapes)
        .map(|(m, shape)| (m.module.as_str(), shape.as_slice(), m.probs.as_slice()));
    write_f32(path, tensors, metadata.clone().into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, kind: AttentionKind, heads: usize, stride: usize) -> AttentionInfo {
        AttentionInfo {
            name: name.into(),
            kind,
            heads,
            stride,
        }
    }

    fn offered() -> Vec<AttentionInfo> {
        use AttentionKind::*;
        vec![
            info(
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
                SelfAttention,
                5,
                1,
            ),
            info(
                "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
                CrossAttention,
                5,
                1,
            ),
            info(
                "up_blocks.1.attentions.0.transformer_blocks.0.attn1",
                SelfAttention,
                10,
                2,
            ),
            info(
                "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
                CrossAttention,
                10,
                2,
            ),
        ]
    }

    #[test]
    fn names_expand_to_the_attention_modules_they_hold() {
        let offered = offered();
        let names = |r: &[&str]| {
            let r: Vec<String> = r.iter().map(|s| s.to_string()).collect();
            expand_attention_modules(&r, &offered)
        };
        assert_eq!(names(&["all"]).unwrap().len(), 4);
        let up = names(&[
            "up_blocks.1",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
        ])
        .unwrap();
        assert_eq!(
            up,
            [
                "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
                "up_blocks.1.attentions.0.transformer_blocks.0.attn1",
                "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
            ]
        );
        // A prefix that only looks like one holds nothing.
        let e = names(&["up_blocks.1.attentions.0.transformer_blocks.0.attn"]).unwrap_err();
        assert!(e.to_string().contains("has no attention module"), "{e}");
        let e = names(&["down_blocks.0.resnets.0"]).unwrap_err().to_string();
        assert!(
            e.contains("`down_blocks.0.resnets.0` has no attention module"),
            "{e}"
        );
        assert!(names(&[]).is_err());
    }

    #[test]
    fn memory_is_counted_and_refused_with_the_largest_named() {
        let offered = offered();
        let all = AttentionRequest {
            modules: offered.iter().map(|a| a.name.clone()).collect(),
            self_rows: QueryRows::All,
        };
        // SD 2.1 at 768: a 96x96 latent, 77 tokens.
        let sizes = attention_bytes(&offered, &all, (96, 96), 77);
        assert_eq!(sizes[0].1, [5, 9216, 9216]);
        assert_eq!(sizes[1].1, [5, 9216, 77]);
        assert_eq!(sizes[2].1, [10, 2304, 2304]);
        let e = check_attention_fits(&offered, &all, (96, 96), 77, 2 << 30).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1 [5, 9216, 9216]")
                && e.contains("--point"),
            "{e}"
        );
        let row = AttentionRequest {
            self_rows: QueryRows::At { x: 0.5, y: 0.5 },
            ..all
        };
        assert_eq!(
            attention_bytes(&offered, &row, (96, 96), 77)[0].1,
            [5, 1, 9216]
        );
        assert!(check_attention_fits(&offered, &row, (96, 96), 77, 1 << 30).is_ok());
    }

    #[test]
    fn rows_and_columns_of_a_map() {
        // 2 heads, a 2x3 grid, 4 keys: value = head*100 + query*10 + key.
        let probs = (0..2)
            .flat_map(|h| {
                (0..6).flat_map(move |q| (0..4).map(move |k| (h * 100 + q * 10 + k) as f32))
            })
            .collect();
        let map = AttentionMap {
            module: "m".into(),
            kind: AttentionKind::CrossAttention,
            heads: 2,
            grid: (2, 3),
            keys: 4,
            row: None,
            probs: Arc::new(probs),
        };
        assert_eq!(map.row_of(1, 4).unwrap(), &[140.0, 141.0, 142.0, 143.0]);
        assert_eq!(
            map.column(0, 2).unwrap(),
            vec![2.0, 12.0, 22.0, 32.0, 42.0, 52.0]
        );
        assert_eq!(map.file_shape(), vec![2, 6, 4]);
        let one = AttentionMap {
            row: Some(4),
            probs: Arc::new((0..8).map(|v| v as f32).collect()),
            ..map
        };
        assert_eq!(one.row_of(1, 4).unwrap(), &[4.0, 5.0, 6.0, 7.0]);
        assert!(one.row_of(1, 3).is_none() && one.column(0, 0).is_none());
        assert_eq!(one.file_shape(), vec![2, 4]);
    }

    #[test]
    fn a_point_outside_the_image_is_refused() {
        assert_eq!(rows_at_point(None, (64, 48)).unwrap(), QueryRows::All);
        assert_eq!(
            rows_at_point(Some([31.5, -0.5]), (64, 48)).unwrap(),
            QueryRows::At { x: 0.5, y: 0.0 }
        );
        let e = rows_at_point(Some([64.0, 3.0]), (64, 48)).unwrap_err();
        assert!(e.to_string().contains("outside the 64x48 image"), "{e}");
    }
}
