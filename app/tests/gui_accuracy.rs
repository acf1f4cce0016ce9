//! With the bundled default model and annotated samples: a click on a keypoint of the source lands
//! its match marker on the target's ground-truth keypoint.
//!
//! Needs `assets/default-model` (the trained UNet2DModel) and `assets/samples` (SPair layout with
//! `ImageAnnotation/`). Until they are in the checkout the test says so and passes without
//! checking anything.

mod common;

use std::collections::BTreeMap;

use diffscope::gui::GuiOptions;
use diffscope_engine::worker::{read_keypoints, ViewResult};

use common::*;

/// Two images of one category, the id of a keypoint both show, its position in each, and the
/// distance within which a match counts as on it (in target pixels).
type Pair = (Vec<std::path::PathBuf>, u32, [f64; 2], [f64; 2], f64);

/// The first two samples of one category that share a visible keypoint, with those keypoints.
fn annotated_pair(options: &GuiOptions) -> Option<Pair> {
    let samples = diffscope::gui::samples::list(&options.samples_dir);
    let mut by_category: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for path in samples {
        if let Ok(Some(k)) = read_keypoints(&path) {
            by_category
                .entry(k.category.clone())
                .or_default()
                .push((path, k));
        }
    }
    for images in by_category.values() {
        for (i, (a, ka)) in images.iter().enumerate() {
            for (b, kb) in &images[i + 1..] {
                if let Some((id, pa)) = ka.points.iter().find(|(id, _)| kb.points.contains_key(id))
                {
                    let size = image::image_dimensions(b).ok()?;
                    let tolerance = (0.1 * kb.pck_scale(size.0, size.1)).max(4.0);
                    return Some((
                        vec![a.clone(), b.clone()],
                        *id,
                        *pa,
                        kb.points[id],
                        tolerance,
                    ));
                }
            }
        }
    }
    None
}

#[test]
#[ignore = "the bundled model is undertrained (PCK@0.1 32.5%, issue 3): this click lands 7.7 px from the keypoint, tolerance 4.5; run with --ignored"]
fn a_click_on_a_source_keypoint_lands_on_the_target_keypoint() {
    let mut options = GuiOptions::bundled();
    let model = diffscope_engine::model::repo::default_model_dir();
    if !model.join("unet/config.json").is_file() {
        eprintln!("skipped: no bundled default model at {}", model.display());
        return;
    }
    let Some((images, id, source_kp, target_kp, tolerance)) = annotated_pair(&options) else {
        eprintln!(
            "skipped: no two annotated samples sharing a keypoint in {}",
            options.samples_dir.display()
        );
        return;
    };
    options.images = images;
    let mut h = harness(options);
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    click_image(&mut h, 0, [source_kp[0] as f32, source_kp[1] as f32]);
    let result = wait_for_exact(
        &mut h,
        |r| matches!(&r.view, ViewResult::Correspond { matches } if matches.len() == 1),
    );
    let ViewResult::Correspond { matches } = &result.view else {
        unreachable!()
    };
    let m = &matches[0][0];
    let distance = (f64::from(m.point.x) - target_kp[0]).hypot(f64::from(m.point.y) - target_kp[1]);
    eprintln!(
        "keypoint {id}: clicked {source_kp:?}, match ({:.1}, {:.1}), truth {target_kp:?}, distance {distance:.2} px (tolerance {tolerance:.1}), similarity {:.3}, mutual {}",
        m.point.x, m.point.y, m.best_similarity, m.mutual
    );
    assert!(
        distance <= tolerance,
        "the match marker is {distance:.1} px from the target's keypoint {id} (tolerance {tolerance:.1} px)"
    );
}
