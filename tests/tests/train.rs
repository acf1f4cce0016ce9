//! Training: the loss goes down, checkpoints reload bit for bit and resume exactly, the written
//! model folder reads back through the engine's loader, and every kind of bad input is a clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use diffscope_engine::features::recipe::seeded_normal;
use diffscope_engine::io::safetensors::read_tensors;
use diffscope_engine::model::pipeline::DiffusionModel;
use diffscope_engine::model::taps::TapRecorder;
use diffscope_engine::model::unet::UNet;
use diffscope_engine::train::checkpoint;
use diffscope_engine::train::dataset::ImageDataset;
use diffscope_engine::train::trainer::Trainer;
use diffscope_tests::tiny_training::{tiny_config, write_images, SIZE};

fn dataset(dir: &Path) -> ImageDataset {
    ImageDataset::load(dir).unwrap()
}

/// A fresh tiny run: `images` pictures in `data/`, the trainer writing into `run/`, all in a
/// temporary folder that lives as long as `_tmp` (bind it: a `..` pattern would drop it at once).
struct TinyRun {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    run: PathBuf,
    trainer: Trainer,
}

fn tiny_run(images: usize, ema: Option<f64>) -> TinyRun {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, images, SIZE);
    let run = tmp.path().join("run");
    let trainer = Trainer::new(tiny_config(ema), dataset(&data), &run, &Device::Cpu).unwrap();
    TinyRun {
        _tmp: tmp,
        data,
        run,
        trainer,
    }
}

fn assert_same(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: names"
    );
    for (name, ta) in a {
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{what}: `{name}` differs"
        );
    }
}

fn predict(unet: &UNet, x: &Tensor, ts: &[f64]) -> Tensor {
    let wanted = ["conv_out".to_string()];
    let mut rec = TapRecorder::new(&wanted, None);
    unet.forward_batch(x, ts, None, &mut rec).unwrap();
    rec.into_captured().remove("conv_out").unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn error_text<T>(r: diffscope_engine::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn training_lowers_the_denoising_loss() {
    let TinyRun {
        _tmp, mut trainer, ..
    } = tiny_run(8, None);
    let all: Vec<usize> = (0..8).collect();
    let before = trainer.evaluate_loss(&all, 99).unwrap();
    for _ in 0..40 {
        let report = trainer.step().unwrap();
        assert!(report.loss.is_finite());
    }
    let after = trainer.evaluate_loss(&all, 99).unwrap();
    assert!(after < 0.6 * before, "loss {before} -> {after}");
}

#[test]
fn a_batch_split_into_shards_has_the_whole_batchs_loss_and_gradients() {
    let TinyRun {
        _tmp, mut trainer, ..
    } = tiny_run(6, None);
    for _ in 0..2 {
        trainer.step().unwrap();
    }
    trainer.set_shards(1);
    let (whole_loss, whole) = trainer.next_gradients().unwrap();
    // Against the largest gradient: some are zero in exact arithmetic (an attention key bias,
    // a bias before a one-channel group norm) and only float noise either way.
    let scale = whole
        .values()
        .map(|g| {
            g.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0f32, f32::max);
    assert!(scale > 0.0);
    // Batch 4: 2 + 2 images, and 2 + 2 again for 3 shards (the last takes what is left).
    for shards in [2, 3, 4] {
        trainer.set_shards(shards);
        let (loss, grads) = trainer.next_gradients().unwrap();
        assert!(
            (loss - whole_loss).abs() <= 1e-6 * whole_loss,
            "{shards} shards: loss {loss} vs {whole_loss}"
        );
        assert_eq!(grads.len(), whole.len());
        for (name, g) in &whole {
            let diff = max_abs_diff(&grads[name], g);
            assert!(
                diff <= 1e-5 * scale,
                "{shards} shards: gradient of {name} differs by {diff} (largest gradient {scale})"
            );
        }
    }
}

#[test]
fn checkpoints_reload_bit_identically_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, 6, SIZE);
    let dev = Device::Cpu;

    // Uninterrupted: 3 steps, a checkpoint, 3 more.
    let straight_dir = tmp.path().join("straight");
    let mut straight =
        Trainer::new(tiny_config(Some(0.9)), dataset(&data), &straight_dir, &dev).unwrap();
    for _ in 0..3 {
        straight.step().unwrap();
    }
    let saved_dir = straight.save().unwrap();
    let (_, saved) = straight.checkpoint_parts().unwrap();
    for _ in 0..3 {
        straight.step().unwrap();
    }

    // The checkpoint reads back bit for bit.
    let ckpt = checkpoint::load(&saved_dir, &dev).unwrap();
    assert_eq!(ckpt.state.step, 3);
    assert_same(&ckpt.tensors.params, &saved.params, "weights");
    assert_same(&ckpt.tensors.adam_m, &saved.adam_m, "first moments");
    assert_same(&ckpt.tensors.adam_v, &saved.adam_v, "second moments");
    assert_same(&ckpt.tensors.ema, &saved.ema, "EMA");

    // Resumed (from the run folder: its newest checkpoint) in another folder: the same 3 steps.
    let ckpt = checkpoint::load(&straight_dir, &dev).unwrap();
    let mut resumed = Trainer::resume(
        ckpt,
        tiny_config(Some(0.9)),
        dataset(&data),
        &tmp.path().join("resumed"),
        &dev,
    )
    .unwrap();
    assert_eq!(resumed.step, 3);
    for _ in 0..3 {
        resumed.step().unwrap();
    }
    let (state_a, a) = straight.checkpoint_parts().unwrap();
    let (state_b, b) = resumed.checkpoint_parts().unwrap();
    assert_eq!(
        (state_a.step, state_a.optimizer_steps),
        (state_b.step, state_b.optimizer_steps)
    );
    assert_same(&a.params, &b.params, "weights after resuming");
    assert_same(&a.adam_m, &b.adam_m, "first moments after resuming");
    assert_same(&a.adam_v, &b.adam_v, "second moments after resuming");
    assert_same(&a.ema, &b.ema, "EMA after resuming");
}

#[test]
fn the_model_folder_reads_back_through_the_loader() {
    let TinyRun {
        _tmp,
        mut trainer,
        run,
        ..
    } = tiny_run(4, None);
    let dev = Device::Cpu;
    for _ in 0..2 {
        trainer.step().unwrap();
    }
    trainer.write_model().unwrap();
    for file in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let model = DiffusionModel::load(run.to_str().unwrap(), &dev).unwrap();
    assert_eq!(model.unet.parameters, trainer.parameter_count());
    assert_eq!(model.schedule.config.beta_schedule, "linear");
    // The file holds exactly the trained weights.
    let written =
        read_tensors(&run.join("unet/diffusion_pytorch_model.safetensors"), &dev).unwrap();
    assert_same(&written, &trainer.weights().unwrap(), "exported weights");
    // And the loaded UNet computes what the trainer's does (candle's convolution there, the
    // training op here: float32 rounding apart).
    let x = seeded_normal(4, &[2, 3, 16, 16], &dev).unwrap();
    let ts = [17.0, 640.0];
    let loaded = predict(&model.unet, &x, &ts);
    let trained = predict(trainer.unet(), &x, &ts);
    let d = max_abs_diff(&loaded, &trained);
    assert!(d < 1e-5, "outputs differ by {d}");
}

#[test]
fn the_exported_weights_are_the_ema_when_it_is_on() {
    let TinyRun {
        _tmp, mut trainer, ..
    } = tiny_run(4, Some(0.5));
    // Recompute diffusers' EMAModel by hand: update 1 copies the weights, update n+1 decays by
    // min(0.5, (1 + n) / (10 + n)).
    let mut expected: Option<BTreeMap<String, Tensor>> = None;
    for update in 1..=4usize {
        trainer.step().unwrap();
        let w = trainer.weights().unwrap();
        expected = Some(match expected {
            None => w,
            Some(avg) => {
                let n = (update - 1) as f64;
                let d = 0.5f64.min((1.0 + n) / (10.0 + n));
                avg.iter()
                    .map(|(k, a)| {
                        let mixed = ((a * d).unwrap() + (&w[k] * (1.0 - d)).unwrap()).unwrap();
                        (k.clone(), mixed)
                    })
                    .collect()
            }
        });
    }
    let expected = expected.unwrap();
    let exported = trainer.export_weights().unwrap();
    let raw = trainer.weights().unwrap();
    let mut moved = false;
    for (name, e) in &expected {
        assert!(max_abs_diff(&exported[name], e) < 1e-6, "`{name}`");
        moved |= max_abs_diff(&raw[name], e) > 1e-6;
    }
    assert!(moved, "the average must differ from the raw weights");
    // Neither holds autograd history (which would chain every step's average to the last: a leak).
    for t in exported.values().chain(raw.values()) {
        assert!(!t.track_op());
    }
}

// -- bad input ------------------------------------------------------------------------------

#[test]
fn an_empty_or_missing_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    let e = error_text(ImageDataset::load(&empty));
    assert!(
        e.contains("empty") && e.contains("no training images"),
        "{e}"
    );
    let missing = tmp.path().join("missing");
    let e = error_text(ImageDataset::load(&missing));
    assert!(e.contains("missing") && e.contains("not a folder"), "{e}");
}

#[test]
fn images_of_mixed_sizes_are_refused_naming_the_odd_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, 3, SIZE);
    write_images(&data.join("zz_big"), 1, 24);
    let e = error_text(ImageDataset::load(&data));
    assert!(
        e.contains("zz_big") && e.contains("24x24") && e.contains("same size"),
        "{e}"
    );
}

#[test]
fn a_corrupt_image_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, 2, SIZE);
    let mut bytes = std::fs::read(data.join("img_01.png")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(data.join("img_01.png"), bytes).unwrap();
    let e = error_text(ImageDataset::load(&data));
    assert!(
        e.contains("img_01.png") && e.contains("not a readable image"),
        "{e}"
    );
}

#[test]
fn images_of_another_size_than_the_model_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, 2, 24);
    let e = error_text(Trainer::new(
        tiny_config(None),
        dataset(&data),
        &tmp.path().join("run"),
        &Device::Cpu,
    ));
    assert!(
        e.contains("24x24") && e.contains("16x16") && e.contains("--size"),
        "{e}"
    );
}

#[test]
fn resuming_a_checkpoint_of_another_architecture_is_refused() {
    let TinyRun {
        _tmp: tmp,
        data,
        run,
        mut trainer,
    } = tiny_run(4, None);
    trainer.step().unwrap();
    let saved = trainer.save().unwrap();
    let mut other = tiny_config(None);
    other.arch.channels = vec![8, 24];
    let ckpt = checkpoint::load(&run, &Device::Cpu).unwrap();
    let e = error_text(Trainer::resume(
        ckpt,
        other,
        dataset(&data),
        &tmp.path().join("b"),
        &Device::Cpu,
    ));
    assert!(
        e.contains(saved.to_str().unwrap()) && e.contains("another model") && e.contains("[8, 24]"),
        "{e}"
    );
}

#[test]
fn a_damaged_checkpoint_is_a_clear_error() {
    let TinyRun {
        _tmp,
        data,
        mut trainer,
        ..
    } = tiny_run(4, None);
    trainer.step().unwrap();
    let saved = trainer.save().unwrap();
    let tensors = saved.join(checkpoint::TENSORS_FILE);
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::write(&tensors, &bytes[..bytes.len() / 3]).unwrap();
    let e = error_text(checkpoint::load(&saved, &Device::Cpu));
    assert!(
        e.contains("tensors.safetensors") && e.contains("corrupt"),
        "{e}"
    );
    let e = error_text(checkpoint::load(&data, &Device::Cpu));
    assert!(e.contains("not a checkpoint"), "{e}");
}

#[test]
fn an_interrupted_checkpoint_write_leaves_the_previous_one_intact() {
    let TinyRun {
        _tmp,
        run,
        mut trainer,
        ..
    } = tiny_run(4, Some(0.9));
    let dev = Device::Cpu;
    trainer.step().unwrap();
    let good = trainer.save().unwrap();
    let (_, good_tensors) = trainer.checkpoint_parts().unwrap();
    trainer.step().unwrap();
    // A save stopped before its final rename, with its tensor file cut short as a crash would.
    let (state, tensors) = trainer.checkpoint_parts().unwrap();
    let partial = checkpoint::write_partial(&run, &state, &tensors).unwrap();
    let file = partial.join(checkpoint::TENSORS_FILE);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let resolved: PathBuf = checkpoint::resolve(&run).unwrap();
    assert_eq!(resolved, good);
    let ckpt = checkpoint::load(&run, &dev).unwrap();
    assert_eq!(ckpt.state.step, 1);
    assert_same(
        &ckpt.tensors.params,
        &good_tensors.params,
        "the previous checkpoint",
    );
    // The next save of that step replaces the leftover and becomes the newest.
    let next = trainer.save().unwrap();
    assert_eq!(checkpoint::resolve(&run).unwrap(), next);
    assert!(!partial.exists());
    assert_eq!(checkpoint::load(&run, &dev).unwrap().state.step, 2);
}
