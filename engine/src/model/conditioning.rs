//! What conditions a UNet pass besides its noisy input and timestep: the text context of the
//! cross-attention, and for SDXL-style UNets the added conditions (pooled text embedding, time ids).

use candle_core::Tensor;

use crate::error::{Error, Result};

/// The conditioning of a text-conditioned UNet.
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// `encoder_hidden_states` `[1 or B, N, D]`.
    pub context: Tensor,
    /// SDXL's `added_cond_kwargs`; None for UNets without `addition_embed_type`.
    pub added: Option<TextTimeConditions>,
}

/// SDXL's added conditions: the pooled text embedding and six time ids.
#[derive(Clone, Debug)]
pub struct TextTimeConditions {
    /// The second text encoder's pooled projection `[1, P]` (`text_embeds`).
    pub text_embeds: Tensor,
    /// `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`; None until the image size is
    /// known ([`Conditioning::at_size`]).
    pub time_ids: Option<[f64; 6]>,
}

impl Conditioning {
    /// Text context only (SD 1.x/2.x).
    pub fn text(context: Tensor) -> Self {
        Self {
            context,
            added: None,
        }
    }

    /// Fix the time ids for an input image of `(width, height)` pixels: `ids` when given, else
    /// SDXL's default for an uncropped image at its own size, `[h, w, 0, 0, h, w]`. A no-op for
    /// conditionings without added conditions.
    pub fn at_size(mut self, (width, height): (u32, u32), ids: Option<[f64; 6]>) -> Self {
        if let Some(added) = &mut self.added {
            let (h, w) = (f64::from(height), f64::from(width));
            added.time_ids = Some(ids.unwrap_or([h, w, 0.0, 0.0, h, w]));
        }
        self
    }
}

/// Parse `--time-ids H,W,TOP,LEFT,H,W`.
pub fn parse_time_ids(text: &str) -> Result<[f64; 6]> {
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid(format!("time ids `{text}`: expected six numbers")))?;
    let ids: [f64; 6] = values.try_into().map_err(|v: Vec<f64>| {
        Error::invalid(format!(
            "time ids `{text}`: expected six numbers (orig_h,orig_w,crop_top,crop_left,target_h,target_w), got {}",
            v.len()
        ))
    })?;
    if ids.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::invalid(format!(
            "time ids `{text}`: every value must be a number >= 0"
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_time_ids_come_from_the_image_size() {
        let zero =
            Tensor::zeros((1, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let c = Conditioning {
            context: zero.clone(),
            added: Some(TextTimeConditions {
                text_embeds: zero,
                time_ids: None,
            }),
        };
        let sized = c.clone().at_size((64, 48), None);
        assert_eq!(
            sized.added.unwrap().time_ids,
            Some([48.0, 64.0, 0.0, 0.0, 48.0, 64.0])
        );
        let given = [1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0];
        assert_eq!(
            c.at_size((64, 48), Some(given)).added.unwrap().time_ids,
            Some(given)
        );
        assert_eq!(parse_time_ids("1,2,3,4,5,6").unwrap()[5], 6.0);
        assert!(parse_time_ids("1,2,3").is_err());
        assert!(parse_time_ids("1,2,3,4,5,x").is_err());
    }
}
