//! `diffscope train` and `diffscope sample` end to end: a tiny run writes a model folder that
//! `sample` draws a grid from; bad input fails with a message naming what is wrong.

use std::path::Path;
use std::process::Command;

fn diffscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffscope"))
        .args(args)
        .output()
        .expect("run diffscope")
}

fn write_images(dir: &Path, count: u32, size: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (i * 60) as u8])
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn train_then_sample_a_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, 4, 16);
    let run = tmp.path().join("run");
    let out = diffscope(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "3",
        "--batch",
        "2",
        "--channels",
        "8,16",
        "--size",
        "16",
        "--head-dim",
        "8",
        "--checkpoint-every",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("step 3/3") && log.contains("img/s"), "{log}");
    assert!(run.join("checkpoints/step-00000002/state.json").is_file());
    assert!(run.join("checkpoints/step-00000003/state.json").is_file());
    assert!(run
        .join("unet/diffusion_pytorch_model.safetensors")
        .is_file());

    // Resuming a finished run to a later step continues from its newest checkpoint.
    let out = diffscope(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--resume",
        run.to_str().unwrap(),
        "--steps",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("at step 3"), "{}", stderr(&out));
    assert!(run.join("checkpoints/step-00000004/state.json").is_file());

    let grid = tmp.path().join("grid.png");
    let out = diffscope(&[
        "sample",
        "--model",
        run.to_str().unwrap(),
        "--count",
        "3",
        "--steps",
        "4",
        "--seed",
        "1",
        "--columns",
        "2",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&grid).unwrap();
    // 2 columns x 2 rows of 16 px with 2 px gaps.
    assert_eq!(
        (img.width(), img.height()),
        (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)
    );
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = tmp.path().join("run");
    let out = diffscope(&[
        "train",
        "--data",
        empty.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no training images"),
        "{}",
        stderr(&out)
    );

    let data = tmp.path().join("data");
    write_images(&data, 2, 16);
    let out = diffscope(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--size",
        "64",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--size"), "{}", stderr(&out));

    let out = diffscope(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--attention-levels",
        "one",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--attention-levels"),
        "{}",
        stderr(&out)
    );

    let out = diffscope(&[
        "sample",
        "--model",
        empty.to_str().unwrap(),
        "--out",
        "x.png",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(empty.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}
