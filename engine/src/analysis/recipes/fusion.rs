//! Features of several sources joined into one descriptor the way "A Tale of Two Features"
//! (SD-DINO, `Junyi42/sd-dino`) joins Stable Diffusion's decoder taps with DINOv2's tokens:
//!
//! 1. each tap may be reduced to `d` dimensions by PCA fitted jointly on all the images given
//!    (their "co-PCA": centred on the joint mean, projected on the top `d` axes);
//! 2. within a source, taps are joined from the coarsest grid to the finest: the stack so far is
//!    resized bilinearly (`align_corners=False`) to the next finer tap's grid and put after it, so
//!    SD-DINO's taps s5, s4, s3 become `[s3, up(s4, up(s5))]` exactly as its `co_pca` builds them;
//!    each tap's channels are multiplied by its weight;
//! 3. every source is resized to the common grid (the finest among them unless one is chosen) and
//!    L2-normalised per cell as a whole;
//! 4. each source is multiplied by its weight and the sources are concatenated in order.
//!
//! With unit-normalised sources the fused vectors all have the same norm, so nearest neighbours by
//! cosine (what diffscope's matching uses) are nearest neighbours by L2 distance (SD-DINO's).

use crate::analysis::aggregate::AggregateGrid;
use crate::analysis::coords::GridSize;
use crate::analysis::normalized::l2_normalize_cells;
use crate::analysis::pca::{PcaBasis, PcaOptions};
use crate::analysis::resize::resize_bilinear;
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// One tap of a source: its map for every image, in image order.
#[derive(Clone, Debug)]
pub struct FusionTap<'a> {
    pub name: String,
    pub maps: Vec<&'a FeatureMap>,
    /// Reduce to this many dimensions by PCA fitted jointly on every image's map.
    pub pca_dims: Option<usize>,
    /// Multiplies the tap's channels before the source is normalised.
    pub weight: f32,
}

/// One feature source (a model) and its weight in the fused descriptor.
#[derive(Clone, Debug)]
pub struct FusionSource<'a> {
    pub name: String,
    pub taps: Vec<FusionTap<'a>>,
    pub weight: f32,
}

/// The fused descriptor of every image, and what was done.
#[derive(Clone, Debug)]
pub struct Fusion {
    pub maps: Vec<FeatureMap>,
    pub description: String,
    /// Per PCA-reduced tap: the share of variance kept and whether the eigen solver converged.
    pub pca: Vec<(String, f64, bool)>,
}

pub fn fuse(sources: &[FusionSource<'_>], grid: AggregateGrid) -> Result<Fusion> {
    let images = check(sources)?;
    let mut pca_report = vec![];
    let mut stacks: Vec<Vec<FeatureMap>> = Vec::with_capacity(sources.len());
    let mut parts = vec![];
    for source in sources {
        let mut reduced: Vec<(Vec<FeatureMap>, f32)> = vec![];
        for tap in &source.taps {
            let maps = match tap.pca_dims {
                Some(d) => {
                    let basis = PcaBasis::fit(
                        &tap.maps,
                        &PcaOptions {
                            components: d,
                            ..PcaOptions::default()
                        },
                    )
                    .map_err(|e| Error::invalid(format!("PCA of tap `{}`: {e}", tap.name)))?;
                    let kept: f64 = basis.explained_variance_ratio.iter().sum();
                    pca_report.push((tap.name.clone(), kept, basis.converged));
                    tap.maps
                        .iter()
                        .map(|m| {
                            let p = basis.project(m)?;
                            let data = p.scores.into_iter().flatten().collect();
                            FeatureMap::new(d, m.height, m.width, data)
                        })
                        .collect::<Result<Vec<_>>>()?
                }
                None => tap.maps.iter().map(|m| (*m).clone()).collect(),
            };
            reduced.push((maps, tap.weight));
        }
        let stack = (0..images)
            .map(|i| coarse_to_fine(reduced.iter().map(|(maps, w)| (&maps[i], *w)).collect()))
            .collect::<Result<Vec<_>>>()?;
        parts.push(describe_source(source));
        stacks.push(stack);
    }
    let channels: usize = stacks.iter().map(|s| s[0].channels).sum();
    let mut maps = Vec::with_capacity(images);
    let mut grids = vec![];
    for i in 0..images {
        // Images may differ in size: each has its own common grid.
        let target = match grid {
            AggregateGrid::Size(size) => size,
            AggregateGrid::Finest => stacks
                .iter()
                .map(|s| GridSize::new(s[i].height, s[i].width))
                .fold(GridSize::new(0, 0), |best, g| {
                    if g.cells() > best.cells() {
                        g
                    } else {
                        best
                    }
                }),
        };
        if target.cells() == 0 {
            return Err(Error::invalid("fusion: the common grid is empty"));
        }
        let mut data = Vec::with_capacity(channels * target.cells());
        for (stack, source) in stacks.iter().zip(sources) {
            let resized = resize_bilinear(&stack[i], target)?;
            let unit = l2_normalize_cells(&resized.data, resized.channels, target.cells());
            data.extend(unit.into_iter().map(|v| v * source.weight));
        }
        maps.push(FeatureMap::new(
            channels,
            target.height,
            target.width,
            data,
        )?);
        grids.push(format!("{}x{}", target.width, target.height));
    }
    grids.dedup();
    let description = format!(
        "SD-DINO fusion: {}; each source resized to {} (bilinear) and L2-normalised per cell, weighted, concatenated",
        parts.join(" + "),
        grids.join(", ")
    );
    Ok(Fusion {
        maps,
        description,
        pca: pca_report,
    })
}

/// A source's taps joined coarsest first: the stack so far goes after the next finer tap,
/// resized to its grid.
fn coarse_to_fine(mut taps: Vec<(&FeatureMap, f32)>) -> Result<FeatureMap> {
    // Stable: taps of equal grids keep their given order, the first ending up first.
    taps.sort_by_key(|(m, _)| std::cmp::Reverse(m.cells()));
    let weighted = |m: &FeatureMap, w: f32| -> Result<FeatureMap> {
        if w == 1.0 {
            return Ok(m.clone());
        }
        FeatureMap::new(
            m.channels,
            m.height,
            m.width,
            m.data.iter().map(|v| v * w).collect(),
        )
    };
    let mut stack: Option<FeatureMap> = None;
    for (map, weight) in taps.into_iter().rev() {
        let tap = weighted(map, weight)?;
        stack = Some(match stack {
            None => tap,
            Some(coarser) => {
                let up = resize_bilinear(&coarser, GridSize::new(tap.height, tap.width))?;
                let mut data = Vec::with_capacity(tap.data.len() + up.data.len());
                data.extend_from_slice(&tap.data);
                data.extend_from_slice(&up.data);
                FeatureMap::new(tap.channels + up.channels, tap.height, tap.width, data)?
            }
        });
    }
    stack.ok_or_else(|| Error::invalid("fusion: a source has no taps"))
}

fn describe_source(source: &FusionSource<'_>) -> String {
    let taps: Vec<String> = source
        .taps
        .iter()
        .map(|t| {
            let pca = t
                .pca_dims
                .map(|d| format!(", joint PCA to {d} over {} images", t.maps.len()))
                .unwrap_or_default();
            let weight = if t.weight == 1.0 {
                String::new()
            } else {
                format!(", x{}", t.weight)
            };
            format!("{}{pca}{weight}", t.name)
        })
        .collect();
    format!(
        "{} [{}] weight {}",
        source.name,
        taps.join("; "),
        source.weight
    )
}

/// Every tap has a map for each image, of one channel count; weights are numbers >= 0.
fn check(sources: &[FusionSource<'_>]) -> Result<usize> {
    let images = sources
        .first()
        .and_then(|s| s.taps.first())
        .map(|t| t.maps.len())
        .ok_or_else(|| Error::invalid("fusion needs at least one source with a tap"))?;
    if images == 0 {
        return Err(Error::invalid("fusion needs at least one image"));
    }
    for source in sources {
        if !(source.weight >= 0.0 && source.weight.is_finite()) {
            return Err(Error::invalid(format!(
                "fusion: weight of `{}` must be a number >= 0, got {}",
                source.name, source.weight
            )));
        }
        if source.taps.is_empty() {
            return Err(Error::invalid(format!(
                "fusion: `{}` has no taps",
                source.name
            )));
        }
        for tap in &source.taps {
            if tap.maps.len() != images {
                return Err(Error::invalid(format!(
                    "fusion: tap `{}` has maps of {} images, not {images}",
                    tap.name,
                    tap.maps.len()
                )));
            }
            if !(tap.weight >= 0.0 && tap.weight.is_finite()) {
                return Err(Error::invalid(format!(
                    "fusion: weight of tap `{}` must be a number >= 0",
                    tap.name
                )));
            }
            for (i, m) in tap.maps.iter().enumerate() {
                m.ensure_finite(&format!("tap `{}` of image {}", tap.name, i + 1))?;
                if m.channels != tap.maps[0].channels {
                    return Err(Error::invalid(format!(
                        "fusion: tap `{}` has {} channels in image 1 but {} in image {}",
                        tap.name,
                        tap.maps[0].channels,
                        m.channels,
                        i + 1
                    )));
                }
            }
        }
    }
    if sources.iter().all(|s| s.weight == 0.0) {
        return Err(Error::invalid("fusion: every source weight is 0"));
    }
    Ok(images)
}
