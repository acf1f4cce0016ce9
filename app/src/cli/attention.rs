//! `diffscope attention`: where a prompt's words land and where a point looks, from the
//! attention probabilities inside the UNet, aggregated as DAAM does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use diffscope_engine::analysis::aggregate::AggregateGrid;
use diffscope_engine::analysis::recipes::attention::{
    aggregate_attention, AttentionAggregation, AttentionTarget,
};
use diffscope_engine::analysis::{GridSize, ImagePoint, ImageSize};
use diffscope_engine::export::colormap::{palette, Colormap};
use diffscope_engine::export::figure::{Figure, Marker, MarkerKind, Overlay, Panel};
use diffscope_engine::features::attention::{
    expand_attention_modules, extract_attention, write_attention, AttentionMap,
};
use diffscope_engine::io::image::{load_rgb, resize};
use diffscope_engine::io::safetensors::write_f32;
use diffscope_engine::model::attention_probs::{AttentionInfo, AttentionKind};
use diffscope_engine::model::clip::{PromptToken, TokenRole};
use diffscope_engine::model::pipeline::PromptSource;

use super::correspond::parse_points;
use super::feature_args::RecipeArgs;
use super::progress::Progress;

#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// The model: `default` (bundled), a diffusers folder, a Hugging Face cache folder
    /// (models--org--name) or a name `org/name[@revision]` found in the local hub cache.
    #[arg(long, default_value = "default")]
    model: String,
    /// Noise timestep, 0 (clean) to the schedule's last step (999 for most models).
    #[arg(long)]
    t: Option<usize>,
    /// The image (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    /// Attention modules by diffusers path (`up_blocks.1.attentions.0.transformer_blocks.0.attn2`),
    /// or any path holding some (`up_blocks.1`, `mid_block`), comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', required = true)]
    layers: Vec<String>,
    /// Weights of the layers in the aggregated maps, one per --layers name (applied to every
    /// module it holds); default all 1.
    #[arg(long, value_delimiter = ',')]
    layer_weights: Option<Vec<f32>>,
    /// A point in the image's pixels (after --size), `X,Y`: self-attention keeps only the row of
    /// the cell under it, and its map is aggregated.
    #[arg(long)]
    point: Option<String>,
    /// The tokens whose cross-attention maps are aggregated: `all` (the prompt's words) or
    /// indices into the tokenizer's sequence (0 is the start token).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    tokens: Vec<String>,
    /// Aggregate one head only (layers with fewer heads are left out); default: every head.
    #[arg(long)]
    head: Option<usize>,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Colormap of the heatmap PNGs.
    #[arg(long, default_value = "turbo")]
    colormap: String,
    /// Output folder: attention.safetensors, maps.safetensors, one PNG per map.
    #[arg(long)]
    out: PathBuf,
}

/// One aggregated map to make: its tensor name in maps.safetensors, its label, its target.
struct Wanted {
    name: String,
    label: String,
    target: AttentionTarget,
}

pub fn run(args: AttentionArgs) -> anyhow::Result<()> {
    let colormap = Colormap::parse(&args.colormap)?;
    let point = match &args.point {
        Some(text) => match parse_points(text)?[..] {
            [p] => Some(p),
            _ => bail!("--point takes one point, X,Y"),
        },
        None => None,
    };
    let loaded = args.recipe.load(&args.model)?;
    let model = loaded.diffusion().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: attention maps come from a diffusion model's UNet; a vision transformer has none",
            args.model
        )
    })?;
    let settings = args.recipe.settings(&loaded, args.t, vec![])?;
    let offered = model.unet.attention_modules();
    let (modules, weights) =
        layers_with_weights(&args.layers, args.layer_weights.as_deref(), &offered)?;
    // Everything a typo could break is checked before the passes.
    let tokens = match &settings.prompt {
        PromptSource::Text(p) => model.prompt_tokens(p)?,
        PromptSource::Embeddings { .. } => None,
    };
    let has = |kind| {
        offered
            .iter()
            .any(|a| a.kind == kind && modules.contains(&a.name))
    };
    let mut wanted = Vec::new();
    if has(AttentionKind::CrossAttention) {
        for index in token_indices(&args.tokens, tokens.as_deref())? {
            let text = tokens
                .as_ref()
                .and_then(|t| t.get(index))
                .map(|t| t.text.clone());
            wanted.push(Wanted {
                name: format!("token.{index}"),
                label: match text {
                    Some(text) => format!("\"{text}\" (token {index})"),
                    None => format!("token {index}"),
                },
                target: AttentionTarget::Token(index),
            });
        }
    }
    if let (Some(p), true) = (point, has(AttentionKind::SelfAttention)) {
        wanted.push(Wanted {
            name: "point".into(),
            label: format!("where ({}, {}) looks", p.x, p.y),
            target: AttentionTarget::Point(p),
        });
    }
    let mut bar = Progress::new("attention", 0, "UNet passes");
    let mut report = |done: usize, total: usize| {
        bar.set_total(total);
        bar.set(done, "");
    };
    let ex = extract_attention(
        model,
        &args.image,
        &settings,
        &modules,
        point.map(|p| [p.x, p.y]),
        None,
        &mut report,
    )?;
    bar.finish();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_attention(
        &args.out.join("attention.safetensors"),
        &ex.maps,
        &ex.metadata,
    )?;

    let image = resize(load_rgb(&args.image)?, settings.size);
    let (width, height) = image.dimensions();
    let size = ImageSize::new(width as usize, height as usize);
    let options = AttentionAggregation {
        head: args.head,
        grid: AggregateGrid::Size(GridSize::new(height as usize, width as usize)),
    };
    let layers: Vec<(&AttentionMap, f32)> = ex.maps.iter().zip(weights.iter().copied()).collect();
    let mut metadata = ex.metadata.clone();
    let mut planes = Vec::new();
    for w in &wanted {
        let heatmap = aggregate_attention(&layers, w.target, size, &options)?;
        metadata.insert(format!("{}.label", w.name), w.label.clone());
        metadata.insert(
            format!("{}.description", w.name),
            heatmap.description.clone(),
        );
        metadata.insert(
            format!("{}.range", w.name),
            format!("{},{}", heatmap.range.0, heatmap.range.1),
        );
        let png = args
            .out
            .join(format!("{}.png", file_stem(&w.name, &w.label)));
        let caption = args.recipe.describe_run(
            &args.model,
            args.t,
            &format!("attention layers {}", args.layers.join("+")),
        );
        heatmap_figure(
            &image,
            &heatmap.values,
            w,
            colormap,
            caption,
            &heatmap.description,
        )
        .render()?
        .save_png(&png)?;
        println!("{}\t{}", w.name, png.display());
        planes.push((w.name.clone(), heatmap.values));
    }
    if let Some(tokens) = &ex.tokens {
        let texts: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
        metadata.insert("token_texts".into(), serde_json::to_string(&texts)?);
    }
    metadata.insert(
        "maps".into(),
        format!(
            "each [height, width] = [{height}, {width}], the image the model saw; values in [0, 1]"
        ),
    );
    let shape = [height as usize, width as usize];
    write_f32(
        &args.out.join("maps.safetensors"),
        planes
            .iter()
            .map(|(n, v)| (n.as_str(), &shape[..], v.as_slice())),
        metadata.into_iter().collect(),
    )?;
    for map in &ex.maps {
        println!("{}\t{:?}", map.module, map.file_shape());
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The modules the `--layers` names hold, in forward order, each with the weight of the first
/// name that holds it.
fn layers_with_weights(
    names: &[String],
    weights: Option<&[f32]>,
    offered: &[AttentionInfo],
) -> anyhow::Result<(Vec<String>, Vec<f32>)> {
    let weights = match weights {
        Some(w) if w.len() == names.len() => w.to_vec(),
        Some(w) => bail!(
            "{} layer weights for {} --layers names",
            w.len(),
            names.len()
        ),
        None => vec![1.0; names.len()],
    };
    let modules = expand_attention_modules(names, offered)?;
    let mut weight_of: BTreeMap<String, f32> = BTreeMap::new();
    for (name, weight) in names.iter().zip(&weights) {
        for module in expand_attention_modules(std::slice::from_ref(name), offered)? {
            weight_of.entry(module).or_insert(*weight);
        }
    }
    let weights = modules.iter().map(|m| weight_of[m]).collect();
    Ok((modules, weights))
}

/// `all`: the prompt's words; else indices into the token sequence.
fn token_indices(
    requested: &[String],
    tokens: Option<&[PromptToken]>,
) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for r in requested.iter().map(|r| r.trim()) {
        if r == "all" {
            let Some(tokens) = tokens else {
                bail!("--tokens all needs a text prompt (the words of prompt embeddings are unknown): give token indices");
            };
            out.extend(
                (tokens.iter().enumerate())
                    .filter(|(_, t)| t.role == TokenRole::Word)
                    .map(|(i, _)| i),
            );
        } else {
            let index: usize = r
                .parse()
                .with_context(|| format!("--tokens: `{r}` is not `all` or a token index"))?;
            if let Some(tokens) = tokens {
                if index >= tokens.len() {
                    bail!(
                        "--tokens: token {index} asked for, the prompt has {} (with padding)",
                        tokens.len()
                    );
                }
            }
            out.push(index);
        }
    }
    out.dedup();
    Ok(out)
}

/// `token_05_cat` from `token.5` and its text: sortable, and safe as a file name.
fn file_stem(name: &str, label: &str) -> String {
    match name.strip_prefix("token.") {
        Some(index) => {
            let word: String = label
                .split('"')
                .nth(1)
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect();
            let index: usize = index.parse().unwrap_or(0);
            if word.is_empty() {
                format!("token_{index:02}")
            } else {
                format!("token_{index:02}_{word}")
            }
        }
        None => name.to_string(),
    }
}

fn heatmap_figure(
    image: &image::RgbImage,
    values: &[f32],
    wanted: &Wanted,
    colormap: Colormap,
    settings: String,
    description: &str,
) -> Figure {
    let markers = match wanted.target {
        AttentionTarget::Point(ImagePoint { x, y }) => vec![Marker {
            x,
            y,
            colour: palette(0),
            kind: MarkerKind::Ring,
        }],
        AttentionTarget::Token(_) => vec![],
    };
    Figure {
        rows: vec![vec![Panel {
            image: image.clone(),
            overlay: Overlay::Heatmap {
                values: values.to_vec(),
                range: (0.0, 1.0),
                colormap,
                opacity: 0.6,
            },
            markers,
            title: wanted.label.clone(),
        }]],
        colorbar: Some((colormap, (0.0, 1.0), "normalised attention".into())),
        caption: vec![settings, description.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_sort_and_name_the_word() {
        assert_eq!(file_stem("token.5", "\"cat\" (token 5)"), "token_05_cat");
        assert_eq!(file_stem("token.12", "token 12"), "token_12");
        assert_eq!(file_stem("point", "where (1, 2) looks"), "point");
    }
}
