//! Attention probabilities recorded during a forward pass, the way [`super::taps`] records module
//! outputs: the modules are named by their diffusers paths (`…transformer_blocks.0.attn1`,
//! `…attn2`, or `mid_block.attentions.0` in a `UNet2DModel`), and what is kept is the
//! `softmax(q kᵀ / sqrt(d))` the module itself computes
//! ([`super::ops::attention::attention_with_probs`]).
//!
//! Cross-attention keeps every query's row (`[heads, queries, 77]` is small). Self-attention keeps
//! every row, or only the row of the query cell under a point: one row per module, never the
//! whole `[heads, N, N]` matrix, which at SD's finest level is N = 9216 at 768x768.

use std::collections::HashMap;

use candle_core::Tensor;

use super::ops::attention::KeptRows;
use crate::error::{Error, Result};

/// What an attention module attends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    /// Queries and keys are the same feature map's cells (`attn1`, and the attentions of
    /// `UNet2DModel`).
    SelfAttention,
    /// Queries are cells, keys the prompt's tokens (`attn2`).
    CrossAttention,
}

impl AttentionKind {
    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::SelfAttention => "self",
            AttentionKind::CrossAttention => "cross",
        }
    }
}

/// One attention module a model offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionInfo {
    /// Its diffusers module path.
    pub name: String,
    pub kind: AttentionKind,
    pub heads: usize,
    /// Downscale of its query grid relative to the UNet input, as for taps.
    pub stride: usize,
}

/// Which rows of the self-attention maps a pass keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QueryRows {
    /// Every query's row: `[heads, N, N]` per module.
    All,
    /// The row of the cell under a point, given as fractions of the input's width and height
    /// (`(x + 0.5) / W` for pixel x of a W-wide image): `[heads, 1, N]` per module.
    At { x: f32, y: f32 },
}

impl QueryRows {
    /// The kept rows on an `(h, w)` query grid: the cell that covers the point (the pixel-centre
    /// convention of `analysis::coords`, border points in the border cells).
    pub fn on_grid(self, (h, w): (usize, usize)) -> KeptRows {
        match self {
            QueryRows::All => KeptRows::All,
            QueryRows::At { x, y } => {
                let cell = |f: f32, n: usize| ((f * n as f32).floor().max(0.0) as usize).min(n - 1);
                KeptRows::One(cell(y, h.max(1)) * w + cell(x, w.max(1)))
            }
        }
    }
}

/// The attention maps a pass records.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionRequest {
    /// Module paths (see [`AttentionInfo::name`]).
    pub modules: Vec<String>,
    /// The rows kept of self-attention maps (cross-attention keeps all).
    pub self_rows: QueryRows,
}

/// What one module recorded in one pass.
#[derive(Clone, Debug)]
pub struct RecordedAttention {
    pub kind: AttentionKind,
    /// float32 `[heads, rows, keys]`, summed over the pass's batch (its noise draws).
    pub probs: Tensor,
    /// The query grid `(h, w)`, row-major (`h·W + w`).
    pub grid: (usize, usize),
    /// The query kept, when only one row was.
    pub row: Option<usize>,
    /// The batch size summed over.
    pub draws: usize,
}

/// Collects the attention maps a pass was asked for; modules ask it whether they are wanted.
#[derive(Default)]
pub struct AttentionRecorder {
    request: Option<AttentionRequest>,
    captured: HashMap<String, RecordedAttention>,
}

impl AttentionRecorder {
    pub fn new(request: &AttentionRequest) -> Self {
        Self {
            request: Some(request.clone()),
            captured: HashMap::new(),
        }
    }

    pub fn wants_anything(&self) -> bool {
        self.request.as_ref().is_some_and(|r| !r.modules.is_empty())
    }

    /// Whether every wanted module has recorded (true when none is wanted).
    pub fn done(&self) -> bool {
        self.request
            .as_ref()
            .is_none_or(|r| r.modules.iter().all(|m| self.captured.contains_key(m)))
    }

    /// The rows module `name` should keep on its `grid`, or None when it is not wanted.
    pub fn rows_for(
        &self,
        name: &str,
        kind: AttentionKind,
        grid: (usize, usize),
    ) -> Option<KeptRows> {
        let request = self.request.as_ref()?;
        if !request.modules.iter().any(|m| m == name) {
            return None;
        }
        Some(match kind {
            AttentionKind::SelfAttention => request.self_rows.on_grid(grid),
            AttentionKind::CrossAttention => KeptRows::All,
        })
    }

    /// Keep what module `name` computed: `probs` `[heads, rows, keys]` summed over `draws`.
    pub fn record(
        &mut self,
        name: &str,
        kind: AttentionKind,
        grid: (usize, usize),
        rows: KeptRows,
        probs: Tensor,
        draws: usize,
    ) -> Result<()> {
        let recorded = RecordedAttention {
            kind,
            probs,
            grid,
            row: match rows {
                KeptRows::All => None,
                KeptRows::One(row) => Some(row),
            },
            draws,
        };
        if self.captured.insert(name.to_string(), recorded).is_some() {
            return Err(Error::invalid(format!(
                "attention `{name}` ran twice in one pass"
            )));
        }
        Ok(())
    }

    pub fn into_captured(self) -> HashMap<String, RecordedAttention> {
        self.captured
    }
}

/// Check requested module names against what a model offers, listing the valid ones on a miss.
pub fn validate_attention(requested: &[String], offered: &[AttentionInfo]) -> Result<()> {
    if requested.is_empty() {
        return Err(Error::invalid("no attention module requested"));
    }
    for name in requested {
        if !offered.iter().any(|a| &a.name == name) {
            let all: Vec<&str> = offered.iter().map(|a| a.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "`{name}` is not an attention module of this model. Attention modules: {}",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.join(", ")
                }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_keeps_the_row_of_the_cell_under_it() {
        // A 4x6 grid: the point at 70% across and 40% down is in row 1, column 4.
        let rows = QueryRows::At { x: 0.7, y: 0.4 }.on_grid((4, 6));
        assert_eq!(rows, KeptRows::One(6 + 4));
        // The borders stay inside the grid.
        assert_eq!(
            QueryRows::At { x: 1.0, y: 1.0 }.on_grid((4, 6)),
            KeptRows::One(23)
        );
        assert_eq!(
            QueryRows::At { x: -0.1, y: 0.0 }.on_grid((4, 6)),
            KeptRows::One(0)
        );
        assert_eq!(QueryRows::All.on_grid((4, 6)), KeptRows::All);
    }

    #[test]
    fn the_recorder_knows_what_it_waits_for() {
        let request = AttentionRequest {
            modules: vec!["a.attn1".into(), "a.attn2".into()],
            self_rows: QueryRows::At { x: 0.5, y: 0.5 },
        };
        let mut rec = AttentionRecorder::new(&request);
        assert!(rec.wants_anything() && !rec.done());
        let self_rows = rec.rows_for("a.attn1", AttentionKind::SelfAttention, (2, 2));
        assert_eq!(self_rows, Some(KeptRows::One(3)));
        let cross_rows = rec.rows_for("a.attn2", AttentionKind::CrossAttention, (2, 2));
        assert_eq!(cross_rows, Some(KeptRows::All));
        assert_eq!(
            rec.rows_for("b.attn1", AttentionKind::SelfAttention, (2, 2)),
            None
        );
        let probs = Tensor::zeros(
            (1, 1, 4),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let kind = AttentionKind::SelfAttention;
        rec.record("a.attn1", kind, (2, 2), KeptRows::One(3), probs.clone(), 1)
            .unwrap();
        assert!(!rec.done());
        let twice = rec.record("a.attn1", kind, (2, 2), KeptRows::One(3), probs.clone(), 1);
        assert!(twice.unwrap_err().to_string().contains("twice"));
        let cross = AttentionKind::CrossAttention;
        rec.record("a.attn2", cross, (2, 2), KeptRows::All, probs, 1)
            .unwrap();
        assert!(rec.done());
        assert_eq!(rec.into_captured()["a.attn1"].row, Some(3));
        assert!(AttentionRecorder::default().done());
        assert!(!AttentionRecorder::default().wants_anything());
    }

    #[test]
    fn unknown_modules_list_the_offered_ones() {
        let offered = [AttentionInfo {
            name: "mid_block.attentions.0".into(),
            kind: AttentionKind::SelfAttention,
            heads: 4,
            stride: 4,
        }];
        let e = validate_attention(&["mid_block.resnets.0".into()], &offered).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("`mid_block.resnets.0` is not an attention module"),
            "{e}"
        );
        assert!(e.contains("mid_block.attentions.0"), "{e}");
        assert!(validate_attention(&[], &offered).is_err());
    }
}
