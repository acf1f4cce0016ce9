//! Planning a batch extraction: which images, the output each one gets, and which of them a
//! shard of a cluster job takes. Shards split the same sorted list, so their union is the whole
//! and no two write the same file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One image to extract and where its features go, relative to the output folder (without the
/// format's extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    pub image: PathBuf,
    pub output: PathBuf,
}

/// The outputs of `images`: each image's path relative to `base` (when given; else its file
/// name), extension dropped. Two images that would write the same output are an error naming
/// both. The items come sorted by output, the order every shard splits.
pub fn plan_outputs(images: &[PathBuf], base: Option<&Path>) -> Result<Vec<BatchItem>> {
    let mut by_output: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for image in images {
        let relative = match base {
            Some(base) => image
                .strip_prefix(base)
                .map_err(|_| Error::file(image, format!("is not inside {}", base.display())))?,
            None => Path::new(
                image
                    .file_name()
                    .ok_or_else(|| Error::file(image, "names no file"))?,
            ),
        };
        let output = relative.with_extension("");
        if let Some(first) = by_output.insert(output.clone(), image.clone()) {
            if first != *image {
                return Err(Error::file(
                    image,
                    format!(
                        "would write the same output as {} ({}): give images with distinct \
                         names, or a folder with --image-dir so outputs keep their subfolders",
                        first.display(),
                        output.display()
                    ),
                ));
            }
        }
    }
    Ok(by_output
        .into_iter()
        .map(|(output, image)| BatchItem { image, output })
        .collect())
}

/// Which part of the list one process takes: all of it, or every `count`-th item from `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shard {
    All,
    Part { index: usize, count: usize },
}

impl Shard {
    /// `I/N` (0 <= I < N), or `auto`: the index and count a cluster scheduler gives the process
    /// (see [`Shard::from_env`]).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        if text.trim() == "auto" {
            return Shard::from_env(env);
        }
        let bad = || {
            Error::invalid(format!(
                "--shard {text:?}: write I/N, the I-th of N shards counting from 0 (e.g. 0/4), or auto"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count)
    }

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::invalid(format!(
                "shard {index}/{count}: the index must be below the count (shards count from 0)"
            )));
        }
        Ok(Shard::Part { index, count })
    }

    /// The shard a job array gives this process: Slurm's `SLURM_ARRAY_TASK_ID` (minus
    /// `SLURM_ARRAY_TASK_MIN`) of `SLURM_ARRAY_TASK_COUNT`, or a Kubernetes Indexed Job's
    /// `JOB_COMPLETION_INDEX` of `JOB_COMPLETIONS` (which the Job's manifest sets to its
    /// `completions`: Kubernetes does not pass the count itself).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let number = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::invalid(format!("{name}={v:?} is not a whole number"))),
            }
        };
        if let (Some(id), Some(count)) = (
            number("SLURM_ARRAY_TASK_ID")?,
            number("SLURM_ARRAY_TASK_COUNT")?,
        ) {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or_else(|| {
                Error::invalid(format!(
                    "SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
                ))
            })?;
            return Shard::new(index, count).map_err(|e| {
                Error::invalid(format!(
                    "{e}: a Slurm array for --shard auto must be contiguous (--array=0-{})",
                    count.saturating_sub(1)
                ))
            });
        }
        if let (Some(index), Some(count)) =
            (number("JOB_COMPLETION_INDEX")?, number("JOB_COMPLETIONS")?)
        {
            return Shard::new(index, count);
        }
        Err(Error::invalid(
            "--shard auto found no job array: it reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN \
             and SLURM_ARRAY_TASK_COUNT (a Slurm array job) or JOB_COMPLETION_INDEX and \
             JOB_COMPLETIONS (a Kubernetes Indexed Job, JOB_COMPLETIONS set in its manifest); \
             elsewhere give --shard I/N",
        ))
    }

    /// Whether this shard takes the item at `position` of the sorted list.
    pub fn takes(&self, position: usize) -> bool {
        match *self {
            Shard::All => true,
            Shard::Part { index, count } => position % count == index,
        }
    }

    /// The items this shard takes.
    pub fn select<'a>(&self, items: &'a [BatchItem]) -> Vec<&'a BatchItem> {
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| self.takes(*i))
            .map(|(_, item)| item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn shards_split_the_list_into_disjoint_parts_whose_union_is_the_whole() {
        let items: Vec<BatchItem> = (0..10)
            .map(|i| BatchItem {
                image: format!("{i}.png").into(),
                output: format!("{i}").into(),
            })
            .collect();
        let mut seen = vec![];
        for index in 0..3 {
            for item in Shard::new(index, 3).unwrap().select(&items) {
                seen.push(item.clone());
            }
        }
        seen.sort_by(|a, b| a.output.cmp(&b.output));
        let mut all = items.clone();
        all.sort_by(|a, b| a.output.cmp(&b.output));
        assert_eq!(seen, all);
        assert_eq!(Shard::All.select(&items).len(), 10);
        assert_eq!(Shard::new(2, 3).unwrap().select(&items).len(), 3);
    }

    #[test]
    fn shard_text_is_index_over_count() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse("1/4", &none).unwrap(),
            Shard::new(1, 4).unwrap()
        );
        for bad in ["4/4", "1", "a/b", "0/0", "-1/3"] {
            assert!(Shard::parse(bad, &none).is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_reads_slurm_and_kubernetes_job_arrays() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::parse("auto", slurm).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3"), ("JOB_COMPLETIONS", "5")]);
        assert_eq!(
            Shard::parse("auto", k8s).unwrap(),
            Shard::new(3, 5).unwrap()
        );
        // An array with gaps (--array=0,5) cannot be split by its ids.
        let gaps = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ]);
        assert!(Shard::parse("auto", gaps).is_err());
        let e = Shard::parse("auto", env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"),
            "{e}"
        );
    }

    #[test]
    fn outputs_keep_subfolders_and_refuse_collisions() {
        let images: Vec<PathBuf> = ["d/cat/1.jpg", "d/dog/1.jpg", "d/a.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let items = plan_outputs(&images, Some(Path::new("d"))).unwrap();
        let outputs: Vec<&Path> = items.iter().map(|i| i.output.as_path()).collect();
        assert_eq!(
            outputs,
            [Path::new("a"), Path::new("cat/1"), Path::new("dog/1")]
        );
        // Without a base folder the two 1.jpg collide.
        let e = plan_outputs(&images, None).unwrap_err().to_string();
        assert!(e.contains("cat/1.jpg") && e.contains("dog/1.jpg"), "{e}");
        let e = plan_outputs(&["x/a.png".into(), "x/a.jpg".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("same output"), "{e}");
    }
}
