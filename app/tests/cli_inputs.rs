//! What the CLI reads and writes, end to end: models by Hugging Face name from a fake hub cache,
//! inputs that must be refused (NaN noise, pickles), and written files' permissions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn diffscope(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffscope"));
    command.args(args);
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run diffscope")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `extract` of the tiny pixel model's `up_blocks.1` at t=50, one draw, plus `extra`.
fn extract_args<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "extract",
        "--model",
        model,
        "--image",
        IMAGE,
        "--t",
        "50",
        "--blocks",
        "up_blocks.1",
        "--ensemble",
        "1",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

const IMAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/images/square_32.png"
);

/// The tiny pixel model copied into a fake hub cache under `hub` as `org/tiny`, with two
/// snapshots: `refs/main` names the second, the first is also tagged `v1`.
fn fake_hub_cache(hub: &Path) -> PathBuf {
    let repo = hub.join("models--org--tiny");
    for commit in ["1111aaaa", "2222bbbb"] {
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        #[cfg(unix)]
        for part in ["unet", "scheduler", "model_index.json"] {
            std::os::unix::fs::symlink(
                fixtures().join("models/ddpm_tiny").join(part),
                snap.join(part),
            )
            .unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "2222bbbb").unwrap();
    std::fs::write(repo.join("refs/v1"), "1111aaaa").unwrap();
    repo
}

/// A model name is found in each place the hub library looks, at a revision too; nothing found,
/// the error lists the places.
#[cfg(unix)]
#[test]
fn models_load_by_hugging_face_name_from_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.safetensors");
    let out_text = out.to_str().unwrap();
    let hub_vars = [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
        "HOME",
    ];
    for (var, hub_below) in [
        ("HF_HUB_CACHE", ""),
        ("HUGGINGFACE_HUB_CACHE", ""),
        ("HF_HOME", "hub"),
        ("XDG_CACHE_HOME", "huggingface/hub"),
        ("HOME", ".cache/huggingface/hub"),
    ] {
        let root = tmp.path().join(var);
        fake_hub_cache(&root.join(hub_below));
        for (spec, commit) in [
            ("org/tiny", "2222bbbb"),
            ("org/tiny@v1", "1111aaaa"),
            ("org/tiny@2222bbbb", "2222bbbb"),
        ] {
            let mut command = diffscope(&extract_args(spec, out_text, &[]));
            hub_vars.iter().for_each(|v| {
                command.env_remove(v);
            });
            let done = run(command.env(var, &root));
            assert!(done.status.success(), "{var} {spec}: {}", stderr(&done));
            let bytes = std::fs::read(&out).unwrap();
            let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            // The features record the snapshot they came from.
            let snapshot = root
                .join(hub_below)
                .join("models--org--tiny/snapshots")
                .join(commit);
            assert_eq!(
                header.metadata().as_ref().unwrap()["model"],
                snapshot.display().to_string(),
                "{var} {spec}"
            );
        }
    }
    let mut command = diffscope(&extract_args("org/absent@v3", out_text, &[]));
    hub_vars.iter().for_each(|v| {
        command.env_remove(v);
    });
    let failed = run(command
        .env("HF_HOME", tmp.path().join("HF_HOME"))
        .env("HOME", tmp.path().join("nobody")));
    let msg = stderr(&failed);
    assert!(!failed.status.success());
    for part in [
        "models--org--absent",
        &format!("{} (HF_HOME)", tmp.path().join("HF_HOME/hub").display()),
        &format!(
            "{} (default)",
            tmp.path().join("nobody/.cache/huggingface/hub").display()
        ),
    ] {
        assert!(msg.contains(part), "{part} not in {msg}");
    }
}

fn write_f32_npy(path: &Path, shape: Vec<usize>, values: Vec<f32>) {
    use diffscope_engine::io::npy::{write_npy, NpyArray, NpyData};
    write_npy(path, &NpyArray::new(shape, NpyData::F32(values)).unwrap()).unwrap();
}

/// Noise holding NaN is refused before any work (it made NaN features and exit 0); a pickled
/// noise file is named as a pickle with how to convert it.
#[test]
fn nan_noise_and_pickled_noise_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("models/ddpm_tiny");
    let out = tmp.path().join("f.safetensors");
    // The tiny model's input is 3x32x32: one draw of that shape.
    let mut values = vec![0.5f32; 3 * 32 * 32];
    values[100] = f32::NAN;
    let nan = tmp.path().join("nan.npy");
    write_f32_npy(&nan, vec![1, 3, 32, 32], values);
    let args = extract_args(
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--noise", nan.to_str().unwrap()],
    );
    let failed = run(&mut diffscope(&args));
    let msg = stderr(&failed);
    assert!(!failed.status.success(), "{msg}");
    assert!(
        msg.contains("nan.npy") && msg.contains("NaN") && msg.contains("[0, 0, 3, 4]"),
        "{msg}"
    );
    assert!(!out.exists());

    let pickle = tmp.path().join("noise.pt");
    std::fs::write(&pickle, b"PK\x03\x04\0\0\0\0archive/data.pkl").unwrap();
    let args = extract_args(
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--noise", pickle.to_str().unwrap()],
    );
    let failed = run(&mut diffscope(&args));
    let msg = stderr(&failed);
    assert!(
        !failed.status.success()
            && msg.contains("noise.pt")
            && msg.contains("pickle")
            && msg.contains("np.save"),
        "{msg}"
    );
}

/// Every file and folder the commands write gets the mode the umask gives (files 0666 and
/// folders 0777 less the umask), never a temporary file's 0600: collaborators on a shared
/// machine can read them.
#[cfg(unix)]
#[test]
fn written_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("models/ddpm_tiny");
    let model = model.to_str().unwrap();
    let out = |name: &str| tmp.path().join(name).display().to_string();
    let images = format!(
        "{IMAGE},{}",
        fixtures().join("images/wide_48x32.png").display()
    );
    let common = [
        "--model",
        model,
        "--t",
        "50",
        "--blocks",
        "up_blocks.1",
        "--ensemble",
        "1",
    ];
    let train_data = out("train-data");
    std::fs::create_dir_all(&train_data).unwrap();
    for i in 0..2u8 {
        image::RgbImage::from_pixel(16, 16, image::Rgb([i * 90, 40, 200]))
            .save(Path::new(&train_data).join(format!("{i}.png")))
            .unwrap();
    }
    let commands: Vec<Vec<String>> = [
        extract_args(model, &out("features/a.safetensors"), &[]),
        extract_args(model, &out("npy"), &["--format", "npy"]),
        [
            &[
                "correspond",
                "--source",
                IMAGE,
                "--targets",
                &images,
                "--points",
                "5,6",
            ][..],
            &common,
            &["--out", &out("correspond")],
        ]
        .concat(),
        [
            &["pca", "--images", &images][..],
            &common,
            &["--out", &out("pca")],
        ]
        .concat(),
        [
            &["segment", "--images", &images, "--k", "2"][..],
            &common,
            &["--out", &out("segment")],
        ]
        .concat(),
        vec![
            "synth",
            "--out",
            &out("synth"),
            "--count",
            "2",
            "--pairs",
            "0",
            "--size",
            "32",
        ],
        vec![
            "train",
            "--data",
            &train_data,
            "--out",
            &out("run"),
            "--steps",
            "2",
            "--batch",
            "2",
            "--channels",
            "8,16",
            "--size",
            "16",
            "--head-dim",
            "8",
            "--checkpoint-every",
            "1",
        ],
        vec![
            "sample",
            "--model",
            &out("run"),
            "--count",
            "1",
            "--steps",
            "2",
            "--out",
            &out("samples/grid.png"),
        ],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_string).collect())
    .collect();
    for args in &commands {
        // The umask is set in a shell that then runs diffscope in its place.
        let done = Command::new("sh")
            .arg("-c")
            .arg("umask 027 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_diffscope"))
            .args(args)
            .output()
            .unwrap();
        assert!(done.status.success(), "{args:?}: {}", stderr(&done));
    }
    let mut checked = 0;
    let mut pending: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("train-data"))
        .collect();
    while let Some(path) = pending.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o750, "{}", path.display());
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o640, "{}", path.display());
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} files and folders written");
}
