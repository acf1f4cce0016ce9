//! `diffscope extract` over many images: shards, resuming, the index, the progress lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A folder of 7 images in subfolders, two of them with the same file name.
fn image_dir(root: &Path) -> PathBuf {
    let dir = root.join("images");
    let sources = ["square_32.png", "wide_48x32.png", "sd_square_32.png"];
    let names = [
        "a/x.png",
        "a/y.png",
        "b/x.png",
        "b/c/z.png",
        "w.png",
        "v.png",
        "u.png",
    ];
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(fixtures().join("images").join(sources[i % 3]), &path).unwrap();
    }
    dir
}

/// `diffscope extract` with the flags of these tests, the inputs, `--out`, then `extra`.
fn extract_command(inputs: &[&str], out: &Path, extra: &[&str]) -> Command {
    let model = fixtures().join("models/ddpm_tiny");
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffscope"));
    command
        .args(["extract", "--model", model.to_str().unwrap()])
        .args(["--t", "10", "--blocks", "mid_block,up_blocks.0"])
        .args(["--ensemble", "2", "--size", "32x32"])
        .args(["--out", out.to_str().unwrap()])
        .args(inputs)
        .args(extra);
    command
}

fn extract(inputs: &[&str], out: &Path, extra: &[&str]) -> Output {
    extract_command(inputs, out, extra)
        .output()
        .expect("run diffscope")
}

fn ok(run: &Output) -> String {
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stderr}");
    stderr
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

/// The names of the files that differ between two folders' contents (none when equal).
fn differences(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
    let mut names: Vec<&PathBuf> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .cloned()
        .collect()
}

#[test]
fn shards_together_write_byte_for_byte_what_one_run_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_dir(tmp.path());
    let inputs = ["--image-dir", dir.to_str().unwrap()];
    let whole = tmp.path().join("whole");
    let stderr = ok(&extract(&inputs, &whole, &[]));
    let all = files(&whole);
    let names: Vec<String> = all.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "a/x.safetensors",
            "a/y.safetensors",
            "b/c/z.safetensors",
            "b/x.safetensors",
            "index.csv",
            "index.json",
            "u.safetensors",
            "v.safetensors",
            "w.safetensors"
        ]
    );
    // Not a terminal: plain progress lines with counts, no carriage returns.
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(stderr.contains("7/7 images"), "{stderr}");
    assert!(stderr.contains("wrote 7, skipped 0"), "{stderr}");
    let index = String::from_utf8(all[Path::new("index.csv")].clone()).unwrap();
    assert_eq!(index.lines().count(), 8, "{index}");
    assert!(index.contains(&format!(
        "{},a/x.safetensors",
        dir.join("a/x.png").display()
    )));

    let sharded = tmp.path().join("sharded");
    let mut counts = vec![];
    for shard in ["0/3", "1/3", "2/3"] {
        let stderr = ok(&extract(&inputs, &sharded, &["--shard", shard]));
        counts.push(stderr.contains("this process takes"));
    }
    assert_eq!(counts, [true; 3]);
    assert_eq!(differences(&files(&sharded), &all), Vec::<PathBuf>::new());

    // Slurm's array variables pick the same shards.
    let slurm = tmp.path().join("slurm");
    for id in ["4", "5", "6"] {
        let run = extract_command(&inputs, &slurm, &["--shard", "auto"])
            .env("SLURM_ARRAY_TASK_ID", id)
            .env("SLURM_ARRAY_TASK_MIN", "4")
            .env("SLURM_ARRAY_TASK_COUNT", "3")
            .output()
            .unwrap();
        ok(&run);
    }
    assert_eq!(differences(&files(&slurm), &all), Vec::<PathBuf>::new());
}

#[test]
fn a_rerun_writes_nothing_and_a_killed_run_resumes_to_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_dir(tmp.path());
    let inputs = ["--image-dir", dir.to_str().unwrap()];
    let out = tmp.path().join("out");
    ok(&extract(&inputs, &out, &[]));
    let reference = files(&out);
    let modified = |p: &str| std::fs::metadata(out.join(p)).unwrap().modified().unwrap();
    let before = modified("a/x.safetensors");

    let stderr = ok(&extract(&inputs, &out, &[]));
    assert!(stderr.contains("wrote 0, skipped 7"), "{stderr}");
    assert_eq!(modified("a/x.safetensors"), before);
    assert_eq!(differences(&files(&out), &reference), Vec::<PathBuf>::new());

    // A run killed mid-write leaves some outputs missing and a partial temporary file.
    std::fs::remove_file(out.join("b/x.safetensors")).unwrap();
    std::fs::remove_file(out.join("w.safetensors")).unwrap();
    std::fs::write(out.join("b/.x.safetensors.partial"), b"half a file").unwrap();
    let stderr = ok(&extract(&inputs, &out, &[]));
    assert!(stderr.contains("wrote 2, skipped 5"), "{stderr}");
    assert_eq!(differences(&files(&out), &reference), Vec::<PathBuf>::new());

    // A real kill: SIGKILL as soon as the first output is there, then resume.
    let killed = tmp.path().join("killed");
    let mut child = extract_command(&inputs, &killed, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !killed.join("a/x.safetensors").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // Killed mid-run, not after the end (the other 6 images take far longer than the poll).
    assert!(!status.success(), "the run ended before the kill");
    assert!(files(&killed).len() < reference.len());
    ok(&extract(&inputs, &killed, &[]));
    assert_eq!(
        differences(&files(&killed), &reference),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn other_settings_in_the_same_folder_are_an_error_not_a_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_dir(tmp.path());
    let inputs = ["--image-dir", dir.to_str().unwrap()];
    let out = tmp.path().join("out");
    ok(&extract(&inputs, &out, &["--shard", "0/2"]));
    let run = extract(&inputs, &out, &["--seed", "7"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("written with other settings"),
        "{stderr}"
    );
}

#[test]
fn a_dataset_split_and_an_image_list_name_their_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixtures().join("spair");
    let out = tmp.path().join("spair");
    let stderr = ok(&extract(&["--data", data.to_str().unwrap()], &out, &[]));
    assert!(stderr.contains("wrote 2"), "{stderr}");
    let names: Vec<PathBuf> = files(&out).into_keys().collect();
    assert!(
        names.contains(&PathBuf::from("cat/2008_000001.safetensors")),
        "{names:?}"
    );
    assert!(
        names.contains(&PathBuf::from("cat/2008_000002.safetensors")),
        "{names:?}"
    );

    // A list of files is named by file name; two of the same name cannot share a folder.
    let dir = image_dir(tmp.path());
    let (ax, bx) = (dir.join("a/x.png"), dir.join("b/x.png"));
    let list = format!("{},{}", ax.display(), bx.display());
    let run = extract(&["--images", &list], &tmp.path().join("list"), &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("same output"),
        "{stderr}"
    );
    let list = format!("{},{}", ax.display(), dir.join("w.png").display());
    ok(&extract(
        &["--images", &list],
        &tmp.path().join("list"),
        &["--format", "npy"],
    ));
    let written: Vec<PathBuf> = files(&tmp.path().join("list")).into_keys().collect();
    assert!(
        written.contains(&PathBuf::from("x/meta.json")),
        "{written:?}"
    );
    assert!(
        written.contains(&PathBuf::from("w/mid_block.npy")),
        "{written:?}"
    );
}
