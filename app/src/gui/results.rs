//! What the engine answered last for each view. All of it was computed from one model and one set
//! of images, so it is reset as one.

use std::sync::Arc;

use diffscope_engine::worker::{AnalysisResult, ElbowResult, PckTable, SweepResult};

#[derive(Default)]
pub struct Results {
    /// The central view: correspondence, PCA or segmentation.
    pub analysis: Option<Arc<AnalysisResult>>,
    /// The similarity of a match across t.
    pub sweep: Option<Arc<SweepResult>>,
    /// k-means inertia against K.
    pub elbow: Option<Arc<ElbowResult>>,
    pub pck: Option<Arc<PckTable>>,
}

impl Results {
    /// Forget every result (a new model, a new session).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
