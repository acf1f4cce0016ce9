//! The engine thread: jobs, superseding, cancel, the nearest-computed preview, errors, and that its
//! numbers equal those of the direct (CLI) path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diffscope_engine::analysis::correspond::{
    correspond_point, CorrespondOptions, NormalizedMap, Target,
};
use diffscope_engine::analysis::recipes::correspondence::{predict_keypoints, MatchRule};
use diffscope_engine::analysis::{ImagePoint, ImageSize};
use diffscope_engine::eval::pck::PckAccumulator;
use diffscope_engine::features::extract::{extract_image, ExtractSettings};
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_engine::worker::*;
use diffscope_engine::FeatureMap;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn model_dir() -> String {
    fixtures().join("models/ddpm_tiny").display().to_string()
}

const WAIT: Duration = Duration::from_secs(60);

struct Engine {
    handle: EngineHandle,
    wakes: Arc<AtomicUsize>,
}

impl Engine {
    fn new() -> Self {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        let handle = EngineHandle::spawn(
            EngineConfig::default(),
            Box::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap();
        Self { handle, wakes }
    }

    /// Every event until `job` has ended, the last one being its end.
    fn run_until_end(&self, job: JobId) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let event = self
                .handle
                .recv_timeout(WAIT)
                .expect("the engine did not answer in time");
            let end = event.job() == job && event.ends_job();
            events.push(event);
            if end {
                return events;
            }
        }
    }

    fn load_model(&self) -> Arc<ModelInfo> {
        let job = self.handle.send(Command::LoadModel {
            spec: model_dir(),
            compute: None,
        });
        match self.run_until_end(job).pop() {
            Some(Event::ModelLoaded { info, .. }) => info,
            other => panic!("{other:?}"),
        }
    }

    fn load_image(&self, name: &str) -> Arc<LoadedImage> {
        self.load_image_at(fixtures().join("images").join(name))
    }

    fn load_image_at(&self, path: PathBuf) -> Arc<LoadedImage> {
        let job = self.handle.send(Command::LoadImage { path });
        match self.run_until_end(job).pop() {
            Some(Event::ImageLoaded { image, .. }) => image,
            other => panic!("{other:?}"),
        }
    }
}

fn settings(t: usize, tap: &str) -> FeatureSettings {
    FeatureSettings {
        t,
        tap: tap.into(),
        ensemble: 2,
        seed: 3,
        prompt: String::new(),
        size: None,
        fusion: None,
    }
}

fn correspond(images: &[&LoadedImage], t: usize, tap: &str, points: Vec<ImagePoint>) -> Command {
    Command::Analyze(AnalysisRequest {
        features: settings(t, tap),
        images: images.iter().map(|i| i.key).collect(),
        view: ViewRequest::Correspond { points },
    })
}

/// `up_blocks.1` at t=261 of an image by the CLI's path, with [`settings`]' noise.
fn direct_map(model: &DiffusionModel, image: &Path) -> FeatureMap {
    let s = ExtractSettings {
        t: 261,
        taps: vec!["up_blocks.1".into()],
        noise: NoiseSource::Seeded {
            seed: 3,
            ensemble: 2,
        },
        prompt: PromptSource::default(),
        size: None,
        time_ids: None,
    };
    let ex = extract_image(model, image, &s, None, &mut |_, _| {}).unwrap();
    FeatureMap::from_tensor(&ex.taps["up_blocks.1"]).unwrap()
}

/// The box of every image of [`annotated_engine`].
const BLOB_BOX: [f64; 4] = [0.0, 0.0, 20.0, 30.0];

/// An engine with the model and two fixture images in SPair layout (category `blob`) loaded: `a.png`
/// (32x32) and `b.png` (48x32) with keypoints 0-2 (3 hidden) and the box [`BLOB_BOX`].
fn annotated_engine(
    root: &Path,
    kps_a: [[f32; 2]; 3],
    kps_b: [[f32; 2]; 3],
) -> (Engine, Arc<LoadedImage>, Arc<LoadedImage>) {
    let images = root.join("JPEGImages/blob");
    let annotations = root.join("ImageAnnotation/blob");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&annotations).unwrap();
    for (name, fixture, kps) in [
        ("a", "square_32.png", kps_a),
        ("b", "wide_48x32.png", kps_b),
    ] {
        std::fs::copy(
            fixtures().join("images").join(fixture),
            images.join(format!("{name}.png")),
        )
        .unwrap();
        let json = format!(
            r#"{{"kps": {{"0": [{}, {}], "1": [{}, {}], "2": [{}, {}], "3": null}}, "bndbox": {BLOB_BOX:?}}}"#,
            kps[0][0], kps[0][1], kps[1][0], kps[1][1], kps[2][0], kps[2][1]
        );
        std::fs::write(annotations.join(format!("{name}.json")), json).unwrap();
    }
    let e = Engine::new();
    e.load_model();
    let (a, b) = (
        e.load_image_at(images.join("a.png")),
        e.load_image_at(images.join("b.png")),
    );
    (e, a, b)
}

fn analysis(event: &Event) -> Option<&AnalysisResult> {
    match event {
        Event::Analysis { result, .. } => Some(result),
        _ => None,
    }
}

#[test]
fn correspondence_equals_the_direct_path() {
    let e = Engine::new();
    let info = e.load_model();
    assert_eq!(info.alpha_bar.len(), 1000);
    assert!((info.snr[10] - info.alpha_bar[10] / (1.0 - info.alpha_bar[10])).abs() < 1e-6);
    let a = e.load_image("square_32.png");
    let b = e.load_image("wide_48x32.png");
    let point = ImagePoint::new(10.0, 20.5);
    let job = e
        .handle
        .send(correspond(&[&a, &b], 261, "up_blocks.1", vec![point]));
    let events = e.run_until_end(job);
    let result = analysis(events.last().unwrap()).unwrap();
    assert!(result.exact);
    let ViewResult::Correspond { matches } = &result.view else {
        panic!()
    };

    // The same through the CLI's path: extract from the files, then match.
    let model = DiffusionModel::load(&model_dir(), &candle_core::Device::Cpu).unwrap();
    let direct = |name: &str| direct_map(&model, &fixtures().join("images").join(name));
    let source = NormalizedMap::new(&direct("square_32.png"), "a").unwrap();
    let target = NormalizedMap::new(&direct("wide_48x32.png"), "b").unwrap();
    let expected = correspond_point(
        &source,
        ImageSize::new(32, 32),
        point,
        &[Target {
            map: &target,
            image: ImageSize::new(48, 32),
        }],
        &CorrespondOptions::default(),
    )
    .unwrap();
    assert_eq!(matches[0], expected);
    assert!(e.wakes.load(Ordering::Relaxed) >= events.len());

    // Asked again, the answer comes from the cache: no extraction progress.
    let job = e
        .handle
        .send(correspond(&[&a, &b], 261, "up_blocks.1", vec![point]));
    let again = e.run_until_end(job);
    assert_eq!(again.len(), 1, "{again:?}");
    // Earlier block-level taps came with the same pass.
    let job = e
        .handle
        .send(correspond(&[&a, &b], 261, "down_blocks.1", vec![point]));
    assert_eq!(e.run_until_end(job).len(), 1);
}

#[test]
fn scrubbing_shows_the_nearest_computed_result_first() {
    let e = Engine::new();
    e.load_model();
    let a = e.load_image("square_32.png");
    let b = e.load_image("wide_48x32.png");
    let p = vec![ImagePoint::new(5.0, 5.0)];
    let job = e
        .handle
        .send(correspond(&[&a, &b], 100, "up_blocks.1", p.clone()));
    e.run_until_end(job);
    let job = e.handle.send(correspond(&[&a, &b], 400, "up_blocks.1", p));
    let results: Vec<AnalysisResult> = e
        .run_until_end(job)
        .iter()
        .filter_map(analysis)
        .cloned()
        .collect();
    assert_eq!(results.len(), 2);
    assert!(!results[0].exact);
    assert_eq!(
        (results[0].shown_t, results[0].shown_tap.as_str()),
        (100, "up_blocks.1")
    );
    assert!(results[1].exact);
    assert_eq!(results[1].shown_t, 400);
}

#[test]
fn newer_requests_supersede_older_ones_and_cancel_works() {
    let e = Engine::new();
    e.load_model();
    let a = e.load_image("square_32.png");
    let b = e.load_image("wide_48x32.png");
    // Keep the engine busy with a long sweep, queue five scrub steps behind it, then cancel it.
    let sweep = e.handle.send(Command::Sweep(SweepRequest {
        features: FeatureSettings {
            ensemble: 8,
            ..settings(0, "up_blocks.2")
        },
        images: vec![a.key, b.key],
        point: ImagePoint::new(3.0, 3.0),
        ts: (0..1000).step_by(10).collect(),
    }));
    // Wait until the sweep runs.
    loop {
        match e.handle.recv_timeout(WAIT) {
            Some(Event::Progress { job, .. }) if job == sweep => break,
            Some(_) => {}
            None => panic!("the sweep did not start"),
        }
    }
    let p = vec![ImagePoint::new(5.0, 5.0)];
    let scrubs: Vec<JobId> = [10, 20, 30, 40, 50]
        .iter()
        .map(|&t| {
            e.handle
                .send(correspond(&[&a, &b], t, "up_blocks.1", p.clone()))
        })
        .collect();
    e.handle.cancel(sweep);
    let last = *scrubs.last().unwrap();
    let events = e.run_until_end(last);
    let ends: Vec<&Event> = events.iter().filter(|ev| ev.ends_job()).collect();
    assert!(
        matches!(ends[0], Event::Cancelled { job, .. } if *job == sweep),
        "{ends:?}"
    );
    for &older in &scrubs[..4] {
        assert!(
            ends.iter()
                .any(|ev| matches!(ev, Event::Cancelled { job, .. } if *job == older)),
            "job {older} was not superseded: {ends:?}"
        );
        assert!(!events
            .iter()
            .any(|ev| analysis(ev).is_some() && ev.job() == older));
    }
    let result = analysis(ends.last().unwrap()).unwrap();
    assert_eq!(result.request.features.t, 50);
}

#[test]
fn errors_are_messages_and_nothing_loaded_is_lost() {
    let e = Engine::new();
    e.load_model();
    let a = e.load_image("square_32.png");
    let b = e.load_image("wide_48x32.png");
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not a PNG").unwrap();
    let job = e.handle.send(Command::LoadImage {
        path: corrupt.clone(),
    });
    match e.run_until_end(job).pop() {
        Some(Event::Error { message, .. }) => {
            assert!(message.contains("broken.png"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let job = e.handle.send(Command::LoadModel {
        spec: dir.path().display().to_string(),
        compute: None,
    });
    match e.run_until_end(job).pop() {
        Some(Event::Error { message, .. }) => {
            assert!(
                message.contains("not a diffusers model folder"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A bad tap, and a point outside the image, are errors too.
    let job = e
        .handle
        .send(correspond(&[&a, &b], 10, "up_blocks.9", vec![]));
    match e.run_until_end(job).pop() {
        Some(Event::Error { message, .. }) => assert!(message.contains("up_blocks.9"), "{message}"),
        other => panic!("{other:?}"),
    }
    let job = e.handle.send(correspond(
        &[&a, &b],
        10,
        "up_blocks.1",
        vec![ImagePoint::new(99.0, 1.0)],
    ));
    assert!(matches!(
        e.run_until_end(job).pop(),
        Some(Event::Error { .. })
    ));
    // The model and images loaded before still work.
    let job = e.handle.send(correspond(
        &[&a, &b],
        10,
        "up_blocks.1",
        vec![ImagePoint::new(1.0, 1.0)],
    ));
    assert!(analysis(e.run_until_end(job).last().unwrap()).is_some_and(|r| r.exact));
}

#[test]
fn pca_segments_elbow_and_export() {
    let e = Engine::new();
    e.load_model();
    let a = e.load_image("square_32.png");
    let b = e.load_image("wide_48x32.png");
    let request = |t: usize, view: ViewRequest| {
        Command::Analyze(AnalysisRequest {
            features: settings(t, "up_blocks.1"),
            images: vec![a.key, b.key],
            view,
        })
    };
    let run = |command: Command| {
        let job = e.handle.send(command);
        match e.run_until_end(job).pop() {
            Some(Event::Analysis { result, .. }) => result,
            other => panic!("{other:?}"),
        }
    };
    let pca = |t| {
        run(request(
            t,
            ViewRequest::Pca {
                joint: true,
                lock: true,
            },
        ))
    };
    let first = pca(200);
    let ViewResult::Pca {
        rgb,
        explained_variance_ratio,
        ..
    } = &first.view
    else {
        panic!()
    };
    assert_eq!(rgb.len(), 2);
    assert_eq!(rgb[1].len(), first.grids[1].cells() * 3);
    assert!(rgb.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
    let ratios = &explained_variance_ratio[0];
    assert!(ratios.windows(2).all(|w| w[0] >= w[1]));
    // Locked: another t keeps the basis, so the explained-variance record is the same fit.
    let second = pca(600);
    let ViewResult::Pca {
        explained_variance_ratio: locked,
        description,
        ..
    } = &second.view
    else {
        panic!()
    };
    assert_eq!(locked, explained_variance_ratio);
    assert!(description.contains("locked"), "{description}");

    let seg = run(request(200, ViewRequest::KMeans { k: 3, joint: false }));
    let ViewResult::Segments {
        labels, segments, ..
    } = &seg.view
    else {
        panic!()
    };
    assert_eq!(labels.len(), 2);
    assert!(*segments >= 3);
    assert!(labels
        .iter()
        .all(|l| l.labels.iter().all(|&x| (x as usize) < *segments)));
    let cut = run(request(
        200,
        ViewRequest::NCut {
            tau: 0.5,
            alpha: 10.0,
        },
    ));
    assert!(matches!(
        cut.view,
        ViewResult::Segments { inertia: None, .. }
    ));

    let job = e.handle.send(Command::Elbow(ElbowRequest {
        features: settings(200, "up_blocks.1"),
        images: vec![a.key, b.key],
        joint: true,
        ks: vec![1, 2, 4],
    }));
    let Some(Event::Elbow { result, .. }) = e.run_until_end(job).pop() else {
        panic!()
    };
    let inertia: Vec<f64> = result.inertia.iter().map(|p| p.1).collect();
    assert!(
        inertia[0] >= inertia[1] && inertia[1] >= inertia[2],
        "{inertia:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let job = e.handle.send(Command::ExportFeatures {
        features: settings(200, "up_blocks.1"),
        images: vec![a.key, b.key],
        folder: dir.path().to_path_buf(),
    });
    let Some(Event::Written { paths, .. }) = e.run_until_end(job).pop() else {
        panic!()
    };
    assert_eq!(paths.len(), 2);
    let bytes = std::fs::read(&paths[0]).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensor = file.tensor("up_blocks.1").unwrap();
    assert_eq!(
        tensor.shape()[1..],
        [first.grids[0].height, first.grids[0].width]
    );
    assert!(file.tensor("latents").is_ok());
}

#[test]
fn pck_table_counts_matches_within_alpha_of_the_bounding_box() {
    // Two fixture images in SPair layout with keypoints.
    let root = tempfile::tempdir().unwrap();
    let kps_a = [[5.0, 6.0], [16.0, 16.0], [27.0, 9.0]];
    let kps_b = [[8.0, 5.0], [24.0, 15.0], [40.0, 25.0]];
    let (e, a, b) = annotated_engine(root.path(), kps_a, kps_b);
    assert_eq!(a.keypoints.as_ref().unwrap().points.len(), 3);
    let (ts, taps) = (
        vec![50, 400],
        vec!["mid_block".to_string(), "up_blocks.1".to_string()],
    );
    let alpha = 0.2;
    let job = e.handle.send(Command::Pck(PckRequest {
        features: settings(0, "up_blocks.1"),
        images: vec![a.key, b.key],
        ts: ts.clone(),
        taps: taps.clone(),
        alpha,
    }));
    let Some(Event::Pck {
        table,
        finished: true,
        ..
    }) = e.run_until_end(job).pop()
    else {
        panic!()
    };
    assert_eq!(table.keypoints, 3);
    // Each cell: the fraction of keypoints whose match (the view's own correspondence) lies within
    // alpha * 30 px (the larger bounding-box side) of the target keypoint.
    for (ti, &t) in ts.iter().enumerate() {
        for (pi, tap) in taps.iter().enumerate() {
            let points: Vec<ImagePoint> =
                kps_a.iter().map(|p| ImagePoint::new(p[0], p[1])).collect();
            let job = e.handle.send(correspond(&[&a, &b], t, tap, points));
            let result = analysis(e.run_until_end(job).last().unwrap())
                .unwrap()
                .clone();
            let ViewResult::Correspond { matches } = &result.view else {
                panic!()
            };
            let correct = matches
                .iter()
                .zip(&kps_b)
                .filter(|(m, truth)| {
                    let p = m[0].point;
                    f64::from(p.x - truth[0]).hypot(f64::from(p.y - truth[1])) <= alpha * 30.0
                })
                .count();
            assert_eq!(table.pck[pi][ti], Some(correct as f64 / 3.0), "t={t} {tap}");
        }
    }
}

#[test]
fn the_pck_table_is_evals_accumulator_over_the_views_matches() {
    let root = tempfile::tempdir().unwrap();
    let kps_a = [[5.0, 6.0], [16.0, 16.0], [27.0, 9.0]];
    let kps_b = [[9.0, 6.0], [30.0, 16.0], [44.0, 9.0]];
    let (e, a, b) = annotated_engine(root.path(), kps_a, kps_b);
    let alpha = 0.2;
    let job = e.handle.send(Command::Pck(PckRequest {
        features: settings(261, "up_blocks.1"),
        images: vec![a.key, b.key],
        ts: vec![261],
        taps: vec!["up_blocks.1".to_string()],
        alpha,
    }));
    let Some(Event::Pck { table, .. }) = e.run_until_end(job).pop() else {
        panic!()
    };
    // eval's way on the same features: the view's matching rule, then eval's accumulator.
    let model = DiffusionModel::load(&model_dir(), &candle_core::Device::Cpu).unwrap();
    let to_f64 = |kps: [[f32; 2]; 3]| kps.map(|p| p.map(f64::from));
    let predicted = predict_keypoints(
        (&direct_map(&model, &a.path), ImageSize::new(32, 32)),
        (&direct_map(&model, &b.path), ImageSize::new(48, 32)),
        &to_f64(kps_a),
        &MatchRule::SoftArgmax(view_match_options()),
    )
    .unwrap();
    let mut counted = PckAccumulator::new(&[alpha]).unwrap();
    counted
        .add_pair("blob", &predicted, &to_f64(kps_b), BLOB_BOX)
        .unwrap();
    assert_eq!(
        table.pck,
        vec![vec![Some(counted.report().overall.per_point[0])]]
    );
}

/// A model reloads in another precision on request; a device this build lacks is an error that
/// says how to get it, and the model loaded before stays.
#[test]
fn a_model_reloads_in_another_precision_and_a_missing_device_is_refused() {
    use diffscope_engine::device::{DeviceChoice, Precision};
    use diffscope_engine::worker::ComputeChoice;
    let e = Engine::new();
    assert_eq!(e.load_model().summary.precision, Precision::F32);
    let load = |compute| {
        let job = e.handle.send(Command::LoadModel {
            spec: model_dir(),
            compute: Some(compute),
        });
        e.run_until_end(job).pop()
    };
    match load(ComputeChoice {
        device: DeviceChoice::Cpu,
        precision: Precision::F16,
    }) {
        Some(Event::ModelLoaded { info, .. }) => {
            assert_eq!(info.summary.precision, Precision::F16);
            assert_eq!(info.summary.device, "CPU");
        }
        other => panic!("{other:?}"),
    }
    if !cfg!(feature = "cuda") {
        match load(ComputeChoice {
            device: DeviceChoice::Cuda(0),
            precision: Precision::F16,
        }) {
            Some(Event::Error { message, .. }) => {
                assert!(message.contains("--features cuda"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Without a choice the next load keeps the last precision.
    let info = e.load_model();
    assert_eq!(info.summary.precision, Precision::F16);
}

/// The result of the last event of `job`, which must be an exact analysis.
fn exact_analysis(e: &Engine, request: AnalysisRequest) -> Arc<AnalysisResult> {
    let job = e.handle.send(Command::Analyze(request));
    match e.run_until_end(job).pop() {
        Some(Event::Analysis { result, .. }) if result.exact => result,
        other => panic!("{other:?}"),
    }
}

#[test]
fn dinov2_as_the_model_a_second_source_fused_and_the_clean_recipe() {
    let e = Engine::new();
    let dino = fixtures().join("models/dinov2_tiny").display().to_string();
    // DINOv2 alone: layers, no timestep.
    let job = e.handle.send(Command::LoadModel {
        spec: dino.clone(),
        compute: None,
    });
    let info = match e.run_until_end(job).pop() {
        Some(Event::ModelLoaded { info, .. }) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        info.summary.family,
        diffscope_engine::model::pipeline::ModelFamily::VisionTransformer
    );
    assert_eq!((info.size_multiple, info.native_side), (14, Some(56)));
    assert!(info.alpha_bar.is_empty());
    let (a, b) = (e.load_image("dino_56.png"), e.load_image("dino_42.png"));
    let request = |features: FeatureSettings, images: Vec<u64>| AnalysisRequest {
        features,
        images,
        view: ViewRequest::Correspond {
            points: vec![ImagePoint::new(20.0, 20.0)],
        },
    };
    let dino_settings = |t| FeatureSettings {
        size: Some((56, 56)),
        ..settings(t, "encoder.layer.1")
    };
    let first = exact_analysis(&e, request(dino_settings(10), vec![a.key, b.key]));
    assert_eq!(
        first.grids[1],
        diffscope_engine::analysis::GridSize::new(4, 4)
    );
    // Its features ignore t: another t is the same cached map.
    let again = exact_analysis(&e, request(dino_settings(900), vec![a.key, b.key]));
    let point = |r: &AnalysisResult| match &r.view {
        ViewResult::Correspond { matches } => matches[0][0].point,
        _ => panic!("not a correspondence"),
    };
    assert_eq!(point(&first), point(&again));

    // A DDPM model's tap fused with DINOv2's last layer (resized to its own 56x56).
    e.load_model();
    let job = e.handle.send(Command::LoadFusionModel { spec: Some(dino) });
    assert!(matches!(
        e.run_until_end(job).pop(),
        Some(Event::FusionModelLoaded { info: Some(_), .. })
    ));
    let (c, d) = (
        e.load_image("square_32.png"),
        e.load_image("wide_48x32.png"),
    );
    let fused = |weight_percent| FeatureSettings {
        fusion: Some(FusionChoice {
            tap: "encoder.layer.1".into(),
            weight_percent,
        }),
        ..settings(100, "up_blocks.1")
    };
    let plain = exact_analysis(
        &e,
        request(settings(100, "up_blocks.1"), vec![c.key, d.key]),
    );
    let only_model = exact_analysis(&e, request(fused(0), vec![c.key, d.key]));
    let half = exact_analysis(&e, request(fused(50), vec![c.key, d.key]));
    assert_eq!(
        point(&plain),
        point(&only_model),
        "weight 0 is the model's tap alone"
    );
    assert_eq!(half.grids[0], plain.grids[0], "fused on the finer grid");
    // Without a second source, fusion is an error that says so.
    let job = e.handle.send(Command::LoadFusionModel { spec: None });
    e.run_until_end(job);
    let job = e
        .handle
        .send(Command::Analyze(request(fused(50), vec![c.key, d.key])));
    match e.run_until_end(job).pop() {
        Some(Event::Error { message, .. }) => {
            assert!(message.contains("second source"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // CleanDIFT's recipe (ensemble 0): its own features, unlike one noisy draw.
    let clean = FeatureSettings {
        ensemble: 0,
        ..settings(100, "up_blocks.1")
    };
    let noisy = FeatureSettings {
        ensemble: 1,
        ..settings(100, "up_blocks.1")
    };
    let pca = |features| AnalysisRequest {
        features,
        images: vec![c.key],
        view: ViewRequest::Pca {
            joint: true,
            lock: false,
        },
    };
    let ratio = |r: &AnalysisResult| match &r.view {
        ViewResult::Pca {
            explained_variance_ratio,
            ..
        } => explained_variance_ratio[0].clone(),
        _ => panic!("not PCA"),
    };
    assert_ne!(
        ratio(&exact_analysis(&e, pca(clean))),
        ratio(&exact_analysis(&e, pca(noisy)))
    );
}
