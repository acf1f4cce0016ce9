//! The engine's UNet, one implementation for diffusers' `UNet2DConditionModel` (Stable Diffusion)
//! and `UNet2DModel` (pixel-space DDPM), with a tap after every module that has a diffusers path.

use std::path::Path;

use candle_core::{DType, Module, Tensor};

use super::attention::{SpatialAttention, Transformer2D, TransformerSpec};
use super::attention_probs::{AttentionInfo, AttentionRecorder};
use super::conditioning::Conditioning;
use super::config::{read_json, PerLevel, UNet2DConditionConfig, UNet2DConfig};
use super::embeddings::{timestep_features, TextTimeEmbedding, TimestepEmbedding};
use super::layers::{conv2d, group_norm, Conv2d, GroupNorm};
use super::resnet::{Downsample, ResnetBlock, ResnetSpec, Upsample};
use super::taps::{tap, TapInfo, TapRecorder};
use super::weights::{find_weight_files, Weights};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UNetKind {
    /// `UNet2DConditionModel`: takes text embeddings through cross-attention.
    Conditional,
    /// `UNet2DModel`: unconditional, pixel space.
    Pixel,
}

enum BlockAttention {
    Transformer(Transformer2D),
    Spatial(SpatialAttention),
}

impl BlockAttention {
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        match (self, context) {
            (BlockAttention::Transformer(t), Some(ctx)) => t.forward(x, ctx, rec),
            (BlockAttention::Transformer(_), None) => {
                Err(Error::invalid("this UNet needs text embeddings (a prompt)"))
            }
            (BlockAttention::Spatial(a), _) => a.forward_recorded(x, rec),
        }
    }

    fn attention_modules(&self, stride: usize) -> Vec<AttentionInfo> {
        match self {
            BlockAttention::Transformer(t) => t.attention_modules(stride),
            BlockAttention::Spatial(a) => a.attention_modules(stride),
        }
    }
}

struct Level {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<BlockAttention>,
}

struct DownBlock {
    level: Level,
    downsampler: Option<Downsample>,
}

struct UpBlock {
    level: Level,
    upsampler: Option<Upsample>,
}

/// How to build one attention module, whichever UNet it is.
#[derive(Clone, Debug)]
enum AttentionPlan {
    None,
    Transformer {
        heads: usize,
        layers: usize,
        context_dim: usize,
    },
    Spatial {
        head_dim: Option<usize>,
        groups: usize,
        rescale: f64,
    },
}

impl AttentionPlan {
    fn build(
        &self,
        w: &Weights,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Option<BlockAttention>> {
        Ok(match *self {
            AttentionPlan::None => None,
            AttentionPlan::Transformer {
                heads,
                layers,
                context_dim,
            } => {
                if heads == 0 || !channels.is_multiple_of(heads) {
                    return Err(Error::invalid(format!(
                        "{channels} channels cannot be split into {heads} attention heads"
                    )));
                }
                let spec = TransformerSpec {
                    channels,
                    heads,
                    layers,
                    context_dim,
                    groups,
                };
                Some(BlockAttention::Transformer(Transformer2D::new(w, &spec)?))
            }
            AttentionPlan::Spatial {
                head_dim,
                groups: attn_groups,
                rescale,
            } => Some(BlockAttention::Spatial(SpatialAttention::new(
                w,
                channels,
                head_dim,
                attn_groups,
                eps,
                rescale,
            )?)),
        })
    }
}

/// Everything about one level the builder needs, common to both UNet kinds.
struct LevelPlan {
    /// Resnets on the way down (one more on the way up).
    layers: usize,
    /// The attention after each resnet: `layers` of them on the way down, `layers + 1` on the way up.
    down: Vec<AttentionPlan>,
    up: Vec<AttentionPlan>,
}

impl AttentionPlan {
    /// The number of transformer blocks, for display (None for other attention).
    fn depth(&self) -> Option<usize> {
        match self {
            AttentionPlan::Transformer { layers, .. } => Some(*layers),
            _ => None,
        }
    }
}

pub struct UNet {
    pub kind: UNetKind,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Text embedding width the cross-attention expects (conditional UNets).
    pub context_dim: Option<usize>,
    center_input_sample: bool,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    time_input_dim: usize,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    /// SDXL's added embedding (`addition_embed_type: text_time`).
    added_embedding: Option<TextTimeEmbedding>,
    down: Vec<DownBlock>,
    mid: Level,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    taps: Vec<TapInfo>,
    pub parameters: usize,
    /// What its weights and activations are held in.
    pub dtype: DType,
}

/// The shared shape of both UNet configs, after per-kind defaults are resolved.
struct Plan {
    kind: UNetKind,
    in_channels: usize,
    out_channels: usize,
    channels: Vec<usize>,
    levels: Vec<LevelPlan>,
    mid_attention: AttentionPlan,
    groups: usize,
    eps: f64,
    mid_scale: f64,
    downsample_padding: usize,
    conv_in_kernel: usize,
    conv_out_kernel: usize,
    center_input_sample: bool,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    context_dim: Option<usize>,
    /// `(addition_time_embed_dim, projection_class_embeddings_input_dim)` for `text_time`.
    text_time: Option<(usize, usize)>,
}

impl UNet {
    /// Load a `unet/` component folder (`config.json` + safetensors weights) in float32.
    pub fn load(dir: &Path, device: &candle_core::Device) -> Result<Self> {
        Self::load_in(dir, device, DType::F32)
    }

    /// Load a `unet/` component folder with its weights cast to `dtype`.
    pub fn load_in(dir: &Path, device: &candle_core::Device, dtype: DType) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::file(
                dir,
                "not a diffusers UNet folder: config.json is missing",
            ));
        }
        let plan = read_plan(&config_path)?;
        let files = find_weight_files(dir, "diffusion_pytorch_model")?;
        let weights = Weights::open(&files, device)?.in_dtype(dtype);
        Self::build(&weights, &plan)
    }

    /// A UNet from elsewhere in place of a pipeline's (`--unet`): a diffusers UNet folder, or a
    /// single `.safetensors` state dict in diffusers' names (CleanDIFT's checkpoints) read with the
    /// pipeline's own `unet/config.json` from `pipeline_unet`. Every weight of the file must be used,
    /// as diffusers' `load_state_dict(strict=True)` requires.
    pub fn load_replacement(
        path: &Path,
        pipeline_unet: &Path,
        device: &candle_core::Device,
        dtype: DType,
    ) -> Result<Self> {
        if path.is_dir() {
            return Self::load_in(path, device, dtype);
        }
        if !path.is_file() {
            return Err(Error::file(path, "no such UNet file or folder (--unet)"));
        }
        super::weights::refuse_pickle(path)?;
        let plan = read_plan(&pipeline_unet.join("config.json"))?;
        let weights = Weights::open(&[path.to_path_buf()], device)?.in_dtype(dtype);
        let unet = Self::build(&weights, &plan).map_err(|e| {
            Error::file(
                path,
                format!(
                    "does not fit the pipeline's UNet ({}): {e}",
                    pipeline_unet.join("config.json").display()
                ),
            )
        })?;
        let stored = weights.stored_parameters();
        if stored != unet.parameters {
            return Err(Error::file(
                path,
                format!(
                    "holds {stored} parameters but the pipeline's UNet ({}) uses {}: it is for another architecture",
                    pipeline_unet.join("config.json").display(),
                    unet.parameters
                ),
            ));
        }
        Ok(unet)
    }

    /// Build from a `config.json` and weights from anywhere (trainable variables, for instance).
    pub fn with_weights(config_path: &Path, weights: &Weights) -> Result<Self> {
        Self::build(weights, &read_plan(config_path)?)
    }
    fn build(w: &Weights, p: &Plan) -> Result<Self> {
        let n = p.channels.len();
        let c0 = p.channels[0];
        let temb = c0 * 4;
        let resnet = |c_in: usize, c_out: usize, scale: f64| ResnetSpec {
            c_in,
            c_out,
            temb: Some(temb),
            groups: p.groups,
            eps: p.eps,
            output_scale_factor: scale,
        };
        let tap_info = |name: String, channels: usize, stride: usize| TapInfo {
            name,
            channels,
            stride,
            block_level: false,
            transformer_depth: None,
        };
        let attention_tap =
            |name: String, channels: usize, stride: usize, plan: &AttentionPlan| TapInfo {
                transformer_depth: plan.depth(),
                ..tap_info(name, channels, stride)
            };
        let block_tap = |name: String, channels: usize, stride: usize| TapInfo {
            block_level: true,
            ..tap_info(name, channels, stride)
        };
        let mut taps = vec![tap_info("conv_in".into(), c0, 1)];

        let mut down = Vec::with_capacity(n);
        let mut skip_channels = vec![c0];
        for (i, level_plan) in p.levels.iter().enumerate() {
            let wb = w.pp(format!("down_blocks.{i}"));
            let c_in = if i == 0 { c0 } else { p.channels[i - 1] };
            let c_out = p.channels[i];
            let stride = 1 << i;
            let mut level = Level {
                resnets: vec![],
                attentions: vec![],
            };
            for j in 0..level_plan.layers {
                let spec = resnet(if j == 0 { c_in } else { c_out }, c_out, 1.0);
                level
                    .resnets
                    .push(ResnetBlock::new(&wb.pp(format!("resnets.{j}")), &spec)?);
                taps.push(tap_info(
                    format!("down_blocks.{i}.resnets.{j}"),
                    c_out,
                    stride,
                ));
                let plan = &level_plan.down[j];
                if let Some(a) =
                    plan.build(&wb.pp(format!("attentions.{j}")), c_out, p.groups, p.eps)?
                {
                    level.attentions.push(a);
                    taps.push(attention_tap(
                        format!("down_blocks.{i}.attentions.{j}"),
                        c_out,
                        stride,
                        plan,
                    ));
                }
                skip_channels.push(c_out);
            }
            let final_level = i + 1 == n;
            let downsampler = if final_level {
                None
            } else {
                taps.push(tap_info(
                    format!("down_blocks.{i}.downsamplers.0"),
                    c_out,
                    stride * 2,
                ));
                skip_channels.push(c_out);
                Some(Downsample::new(
                    &wb.pp("downsamplers.0"),
                    c_out,
                    p.downsample_padding,
                )?)
            };
            let out_stride = if final_level { stride } else { stride * 2 };
            taps.push(block_tap(format!("down_blocks.{i}"), c_out, out_stride));
            down.push(DownBlock { level, downsampler });
        }

        let c_last = p.channels[n - 1];
        let deepest = 1 << (n - 1);
        let wm = w.pp("mid_block");
        let mut mid = Level {
            resnets: vec![],
            attentions: vec![],
        };
        mid.resnets.push(ResnetBlock::new(
            &wm.pp("resnets.0"),
            &resnet(c_last, c_last, p.mid_scale),
        )?);
        taps.push(tap_info("mid_block.resnets.0".into(), c_last, deepest));
        if let Some(a) = p
            .mid_attention
            .build(&wm.pp("attentions.0"), c_last, p.groups, p.eps)?
        {
            mid.attentions.push(a);
            taps.push(attention_tap(
                "mid_block.attentions.0".into(),
                c_last,
                deepest,
                &p.mid_attention,
            ));
        }
        mid.resnets.push(ResnetBlock::new(
            &wm.pp("resnets.1"),
            &resnet(c_last, c_last, p.mid_scale),
        )?);
        taps.push(tap_info("mid_block.resnets.1".into(), c_last, deepest));
        taps.push(block_tap("mid_block".into(), c_last, deepest));

        let mut up = Vec::with_capacity(n);
        let mut prev_out = c_last;
        for i in 0..n {
            let level_index = n - 1 - i;
            let level_plan = &p.levels[level_index];
            let wb = w.pp(format!("up_blocks.{i}"));
            let c_out = p.channels[level_index];
            let stride = 1 << level_index;
            let layers = level_plan.layers + 1;
            let mut level = Level {
                resnets: vec![],
                attentions: vec![],
            };
            for j in 0..layers {
                let skip = skip_channels.pop().ok_or_else(|| {
                    Error::invalid("UNet config: more up-block layers than skip connections")
                })?;
                let c_in = if j == 0 { prev_out } else { c_out };
                level.resnets.push(ResnetBlock::new(
                    &wb.pp(format!("resnets.{j}")),
                    &resnet(c_in + skip, c_out, 1.0),
                )?);
                taps.push(tap_info(
                    format!("up_blocks.{i}.resnets.{j}"),
                    c_out,
                    stride,
                ));
                let plan = &level_plan.up[j];
                if let Some(a) =
                    plan.build(&wb.pp(format!("attentions.{j}")), c_out, p.groups, p.eps)?
                {
                    level.attentions.push(a);
                    taps.push(attention_tap(
                        format!("up_blocks.{i}.attentions.{j}"),
                        c_out,
                        stride,
                        plan,
                    ));
                }
            }
            let final_level = i + 1 == n;
            let upsampler = if final_level {
                None
            } else {
                taps.push(tap_info(
                    format!("up_blocks.{i}.upsamplers.0"),
                    c_out,
                    stride / 2,
                ));
                Some(Upsample::new(&wb.pp("upsamplers.0"), c_out)?)
            };
            let out_stride = if final_level { stride } else { stride / 2 };
            taps.push(block_tap(format!("up_blocks.{i}"), c_out, out_stride));
            up.push(UpBlock { level, upsampler });
            prev_out = c_out;
        }
        taps.push(tap_info("conv_out".into(), p.out_channels, 1));

        Ok(Self {
            kind: p.kind,
            in_channels: p.in_channels,
            out_channels: p.out_channels,
            context_dim: p.context_dim,
            center_input_sample: p.center_input_sample,
            flip_sin_to_cos: p.flip_sin_to_cos,
            freq_shift: p.freq_shift,
            time_input_dim: c0,
            conv_in: conv2d(
                &w.pp("conv_in"),
                p.in_channels,
                c0,
                p.conv_in_kernel,
                1,
                p.conv_in_kernel / 2,
            )?,
            time_embedding: TimestepEmbedding::new(&w.pp("time_embedding"), c0, temb)?,
            added_embedding: p
                .text_time
                .map(|(time_dim, input_dim)| {
                    TextTimeEmbedding::new(
                        w,
                        (time_dim, input_dim, temb),
                        p.flip_sin_to_cos,
                        p.freq_shift,
                    )
                })
                .transpose()?,
            down,
            mid,
            up,
            conv_norm_out: group_norm(&w.pp("conv_norm_out"), p.groups, c0, p.eps)?,
            conv_out: conv2d(
                &w.pp("conv_out"),
                c0,
                p.out_channels,
                p.conv_out_kernel,
                1,
                p.conv_out_kernel / 2,
            )?,
            taps,
            parameters: w.loaded_parameters(),
            dtype: w.dtype(),
        })
    }

    /// Every tap in forward order.
    pub fn taps(&self) -> &[TapInfo] {
        &self.taps
    }

    /// Every attention module in forward order, with the stride of its query grid.
    pub fn attention_modules(&self) -> Vec<AttentionInfo> {
        let n = self.down.len();
        let down = (self.down.iter().enumerate()).map(|(i, b)| (&b.level, 1 << i));
        let mid = std::iter::once((&self.mid, 1 << (n - 1)));
        let up = (self.up.iter().enumerate()).map(|(i, b)| (&b.level, 1 << (n - 1 - i)));
        down.chain(mid)
            .chain(up)
            .flat_map(|(level, stride)| {
                level
                    .attentions
                    .iter()
                    .flat_map(move |a| a.attention_modules(stride))
            })
            .collect()
    }

    /// The factor by which the input's height and width must be divisible.
    pub fn size_multiple(&self) -> usize {
        match self.kind {
            // diffusers' UNet2DModel has no path for sizes that do not halve evenly.
            UNetKind::Pixel => 1 << (self.down.len() - 1),
            UNetKind::Conditional => 1,
        }
    }

    /// Check that an input of this size goes through every level.
    pub fn check_input_size(&self, height: usize, width: usize) -> Result<()> {
        let m = self.size_multiple();
        if height == 0 || width == 0 || !height.is_multiple_of(m) || !width.is_multiple_of(m) {
            return Err(Error::invalid(format!("this UNet needs an input whose height and width are multiples of {m}; got {width}x{height}")));
        }
        Ok(())
    }

    /// One forward pass for timestep `t`, offering every module's output to `rec` and returning as
    /// soon as `rec` has all it wants.
    pub fn forward_taps(
        &self,
        sample: &Tensor,
        t: f64,
        cond: Option<&Conditioning>,
        rec: &mut TapRecorder,
    ) -> Result<()> {
        self.forward_batch(sample, &[t], cond, rec)
    }

    /// The forward pass of a batch, one timestep per sample (or one for all), offering every
    /// module's output to `rec`.
    pub fn forward_batch(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        cond: Option<&Conditioning>,
        rec: &mut TapRecorder,
    ) -> Result<()> {
        self.run(sample, timesteps, cond, rec).map(|_| ())
    }

    /// The UNet's output (the predicted noise, or v) for a batch, one timestep per sample (or
    /// one for all). `cond` is the text conditioning (context `[B or 1, 77, D]`).
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        cond: Option<&Conditioning>,
    ) -> Result<Tensor> {
        let mut everything = TapRecorder::new(&[], None);
        self.run(sample, timesteps, cond, &mut everything)?
            .ok_or_else(|| Error::invalid("the UNet pass stopped before its output"))
    }

    /// The width of the pooled text embedding an SDXL-style UNet takes (None for others).
    pub fn pooled_text_dim(&self) -> Option<usize> {
        self.added_embedding
            .as_ref()
            .map(TextTimeEmbedding::text_dim)
    }

    /// The pass itself: the output, or None when `rec` had all it wanted before the end.
    fn run(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        cond: Option<&Conditioning>,
        rec: &mut TapRecorder,
    ) -> Result<Option<Tensor>> {
        let context = cond.map(|c| &c.context);
        let sample = if self.center_input_sample {
            ((sample * 2.0)? - 1.0)?
        } else {
            sample.clone()
        };
        let batch = sample.dim(0)?;
        // One timestep for the whole batch is repeated, as diffusers expands it.
        let timesteps = match timesteps {
            [t] if batch > 1 => vec![*t; batch],
            ts => ts.to_vec(),
        };
        // Sinusoidal features in float32, then the model's dtype, as diffusers casts them.
        let t_feat = timestep_features(
            &timesteps,
            self.time_input_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            sample.device(),
        )?
        .to_dtype(sample.dtype())?;
        let mut temb = self.time_embedding.forward(&t_feat)?;
        if let Some(added) = &self.added_embedding {
            let conditions = cond.and_then(|c| c.added.as_ref()).ok_or_else(|| {
                Error::invalid("this SDXL-style UNet needs a pooled text embedding and time ids (a prompt, or --prompt-embeds with --pooled-embeds)")
            })?;
            let time_ids = conditions.time_ids.ok_or_else(|| {
                Error::invalid("the SDXL time ids were not set (the image size is unknown)")
            })?;
            let aug = added.forward(&conditions.text_embeds, &time_ids, batch, temb.dtype())?;
            temb = (temb + aug)?;
        }
        let temb = Some(&temb);

        let mut h = self.conv_in.forward(&sample)?;
        tap!(rec, "conv_in", h);
        let mut skips = vec![h.clone()];
        for (i, block) in self.down.iter().enumerate() {
            for (j, resnet) in block.level.resnets.iter().enumerate() {
                h = resnet.forward(&h, temb)?;
                tap!(rec, format!("down_blocks.{i}.resnets.{j}"), h);
                if let Some(attn) = block.level.attentions.get(j) {
                    h = attn.forward(&h, context, rec.attention())?;
                    tap!(rec, format!("down_blocks.{i}.attentions.{j}"), h);
                }
                skips.push(h.clone());
            }
            if let Some(ds) = &block.downsampler {
                h = ds.forward(&h)?;
                tap!(rec, format!("down_blocks.{i}.downsamplers.0"), h);
                skips.push(h.clone());
            }
            tap!(rec, format!("down_blocks.{i}"), h);
        }

        h = self.mid.resnets[0].forward(&h, temb)?;
        tap!(rec, "mid_block.resnets.0", h);
        for (j, attn) in self.mid.attentions.iter().enumerate() {
            h = attn.forward(&h, context, rec.attention())?;
            tap!(rec, format!("mid_block.attentions.{j}"), h);
            h = self.mid.resnets[j + 1].forward(&h, temb)?;
            tap!(rec, format!("mid_block.resnets.{}", j + 1), h);
        }
        if self.mid.attentions.is_empty() {
            h = self.mid.resnets[1].forward(&h, temb)?;
            tap!(rec, "mid_block.resnets.1", h);
        }
        tap!(rec, "mid_block", h);

        for (i, block) in self.up.iter().enumerate() {
            for (j, resnet) in block.level.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::invalid("UNet: skip connections exhausted"))?;
                h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, temb)?;
                tap!(rec, format!("up_blocks.{i}.resnets.{j}"), h);
                if let Some(attn) = block.level.attentions.get(j) {
                    h = attn.forward(&h, context, rec.attention())?;
                    tap!(rec, format!("up_blocks.{i}.attentions.{j}"), h);
                }
            }
            if let Some(us) = &block.upsampler {
                // The next skip's size: 2x, or what the odd-sized input had on the way down.
                let next = skips
                    .last()
                    .ok_or_else(|| Error::invalid("UNet: skip connections exhausted"))?;
                let (_, _, sh, sw) = next.dims4()?;
                h = us.forward(&h, (sh, sw))?;
                tap!(rec, format!("up_blocks.{i}.upsamplers.0"), h);
            }
            tap!(rec, format!("up_blocks.{i}"), h);
        }

        let out = self
            .conv_out
            .forward(&self.conv_norm_out.forward_silu(&h)?)?;
        tap!(rec, "conv_out", out);
        Ok(Some(out))
    }
}

fn read_plan(config_path: &Path) -> Result<Plan> {
    let raw: serde_json::Value = read_json(config_path)?;
    let class = raw
        .get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let plan = match class {
            "UNet2DConditionModel" => {
                let c: UNet2DConditionConfig = read_json(config_path)?;
                c.check_supported().map_err(|e| Error::file(config_path, e.to_string()))?;
                plan_conditional(&c).map_err(|e| Error::file(config_path, e.to_string()))?
            }
            "UNet2DModel" => {
                let c: UNet2DConfig = read_json(config_path)?;
                c.check_supported().map_err(|e| Error::file(config_path, e.to_string()))?;
                plan_pixel(&c).map_err(|e| Error::file(config_path, e.to_string()))?
            }
            other => {
                return Err(Error::file(
                    config_path,
                    format!("model class `{other}` is not supported (supported: UNet2DConditionModel, UNet2DModel)"),
                ))
            }
        };
    Ok(plan)
}

fn plan_conditional(c: &UNet2DConditionConfig) -> Result<Plan> {
    let n = c.block_out_channels.len();
    // In UNet2DConditionModel `attention_head_dim` is, for historical reasons, the number of heads.
    let heads = c
        .num_attention_heads
        .as_ref()
        .unwrap_or(&c.attention_head_dim)
        .for_levels(n, "attention_head_dim")?;
    let cross = c.cross_attention_dim.for_levels(n, "cross_attention_dim")?;
    let layers = c.layers_per_block.for_levels(n, "layers_per_block")?;
    let depths = c
        .transformer_layers_per_block
        .for_levels(n, "transformer_layers_per_block")?;
    // Up block i mirrors level n-1-i; its depths come from their own list when the config has one.
    let up_depths: Vec<PerLevel> = match &c.reverse_transformer_layers_per_block {
        Some(list) if list.len() == n => list.iter().rev().cloned().collect(),
        Some(list) => {
            return Err(Error::invalid(format!(
            "`reverse_transformer_layers_per_block` has {} entries but the model has {n} levels",
            list.len()
        )))
        }
        None => {
            if depths.iter().any(|d| matches!(d, PerLevel::Each(_))) {
                return Err(Error::invalid("per-layer `transformer_layers_per_block` needs `reverse_transformer_layers_per_block`, as diffusers requires"));
            }
            depths.clone()
        }
    };
    let transformer = |level: usize, depth: usize| AttentionPlan::Transformer {
        heads: heads[level],
        layers: depth,
        context_dim: cross[level],
    };
    let mut levels = Vec::with_capacity(n);
    for (i, ty) in c.down_block_types.iter().enumerate() {
        let attends = ty.starts_with("CrossAttn");
        let plans = |count: usize, entry: &PerLevel, key: &str| -> Result<Vec<AttentionPlan>> {
            (0..count)
                .map(|j| {
                    Ok(if attends {
                        transformer(i, entry.for_layer(j, count, key)?)
                    } else {
                        AttentionPlan::None
                    })
                })
                .collect()
        };
        levels.push(LevelPlan {
            layers: layers[i],
            down: plans(layers[i], &depths[i], "transformer_layers_per_block")?,
            up: plans(
                layers[i] + 1,
                &up_depths[i],
                "reverse_transformer_layers_per_block",
            )?,
        });
    }
    check_up_matches_down(&c.down_block_types, &c.up_block_types)?;
    // The mid block has one transformer: the last level's depth (its first entry if a list).
    let mid_depth = depths[n - 1].for_layer(0, 1, "transformer_layers_per_block")?;
    Ok(Plan {
        kind: UNetKind::Conditional,
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        channels: c.block_out_channels.clone(),
        levels,
        mid_attention: transformer(n - 1, mid_depth),
        groups: c.norm_num_groups,
        eps: c.norm_eps,
        mid_scale: c.mid_block_scale_factor,
        downsample_padding: c.downsample_padding,
        conv_in_kernel: c.conv_in_kernel,
        conv_out_kernel: c.conv_out_kernel,
        center_input_sample: c.center_input_sample,
        flip_sin_to_cos: c.flip_sin_to_cos,
        freq_shift: c.freq_shift,
        context_dim: Some(cross[n - 1]),
        text_time: c
            .addition_time_embed_dim
            .zip(c.projection_class_embeddings_input_dim),
    })
}

fn plan_pixel(c: &UNet2DConfig) -> Result<Plan> {
    check_up_matches_down(&c.down_block_types, &c.up_block_types)?;
    let n = c.block_out_channels.len();
    let levels = c
        .down_block_types
        .iter()
        .enumerate()
        .map(|(i, ty)| {
            let attention = if ty.starts_with("Attn") {
                // Here `attention_head_dim` is the head size; null means one head.
                AttentionPlan::Spatial {
                    head_dim: Some(c.attention_head_dim.unwrap_or(c.block_out_channels[i])),
                    groups: c.norm_num_groups,
                    rescale: 1.0,
                }
            } else {
                AttentionPlan::None
            };
            LevelPlan {
                layers: c.layers_per_block,
                down: vec![attention.clone(); c.layers_per_block],
                up: vec![attention; c.layers_per_block + 1],
            }
        })
        .collect();
    let mid_attention = if c.add_attention {
        AttentionPlan::Spatial {
            head_dim: Some(c.attention_head_dim.unwrap_or(c.block_out_channels[n - 1])),
            groups: c.attn_norm_num_groups.unwrap_or(c.norm_num_groups),
            rescale: c.mid_block_scale_factor,
        }
    } else {
        AttentionPlan::None
    };
    Ok(Plan {
        kind: UNetKind::Pixel,
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        channels: c.block_out_channels.clone(),
        levels,
        mid_attention,
        groups: c.norm_num_groups,
        eps: c.norm_eps,
        mid_scale: c.mid_block_scale_factor,
        downsample_padding: c.downsample_padding,
        conv_in_kernel: 3,
        conv_out_kernel: 3,
        center_input_sample: c.center_input_sample,
        flip_sin_to_cos: c.flip_sin_to_cos,
        freq_shift: c.freq_shift,
        context_dim: None,
        text_time: None,
    })
}

fn has_attention(block_type: &str) -> bool {
    block_type.starts_with("CrossAttn") || block_type.starts_with("Attn")
}

/// Our builder derives the up path from the down path; refuse configs where they disagree.
fn check_up_matches_down(down: &[String], up: &[String]) -> Result<()> {
    for (d, u) in down.iter().zip(up.iter().rev()) {
        if has_attention(d) != has_attention(u) {
            return Err(Error::unsupported(format!(
                "up block `{u}` mirroring down block `{d}` (attention must be symmetric)"
            )));
        }
    }
    Ok(())
}
