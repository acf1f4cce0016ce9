//! Recognising pickled files (PyTorch's `torch.save`, Python's `pickle`). Loading a pickle can run
//! arbitrary code, so diffscope never loads one: wherever a file is read, a pickle is named as such
//! with the way to convert it to a format that holds only numbers.

use std::io::Read;
use std::path::Path;

use crate::error::Error;

/// The extensions pickled checkpoints and tensors are saved under.
pub const PICKLE_EXTENSIONS: [&str; 6] = ["bin", "ckpt", "pt", "pth", "pkl", "pickle"];

/// How to turn a pickled model into safetensors.
pub const MODEL_ADVICE: &str = "convert it to .safetensors (for example with diffusers or \
     transformers: `save_pretrained(dir, safe_serialization=True)`)";

/// How to turn a pickled tensor into a `.npy` array.
pub const ARRAY_ADVICE: &str = "convert it to .npy in Python: \
     `np.save('x.npy', torch.load('x.pt').float().numpy())`";

/// How to turn a pickled dict of tensors into a `.safetensors` file.
pub const TENSORS_ADVICE: &str = "convert it in Python: \
     `safetensors.torch.save_file(torch.load('x.pt'), 'x.safetensors')`";

/// Whether `path`'s extension is one pickles are saved under.
pub fn has_pickle_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `path` holds a pickle: by its extension, or by its first bytes, which are either a
/// pickle's protocol header (`\x80` then the protocol, 2 to 5) or the ZIP archive `torch.save`
/// writes since PyTorch 1.6 (which holds a `data.pkl`).
pub fn is_pickle(path: &Path) -> bool {
    if has_pickle_extension(path) {
        return true;
    }
    let mut head = Vec::with_capacity(1024);
    let read = std::fs::File::open(path).and_then(|f| f.take(1024).read_to_end(&mut head));
    read.is_ok() && starts_like_pickle(&head)
}

fn starts_like_pickle(head: &[u8]) -> bool {
    match head {
        [0x80, 2..=5, ..] => true,
        [b'P', b'K', 3, 4, ..] => head.windows(8).any(|w| w == b"data.pkl"),
        _ => false,
    }
}

/// The error for a pickle found where another format was expected: what it is, why it is not
/// loaded, and `advice` on converting it.
pub fn pickle_error(path: &Path, advice: &str) -> Error {
    Error::file(
        path,
        format!(
            "this is a pickled PyTorch/Python file, which diffscope does not load because \
             loading a pickle can run code; {advice}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickles_are_recognised_by_extension_and_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("noise.PT");
        std::fs::write(&named, b"anything").unwrap();
        // torch.save's legacy format: a protocol-2 pickle.
        let legacy = dir.path().join("noise.npy");
        std::fs::write(&legacy, b"\x80\x02\x8a\x0alz\xf9").unwrap();
        // torch.save's ZIP format.
        let zipped = dir.path().join("embeds");
        std::fs::write(&zipped, b"PK\x03\x04\0\0\0\0archive/data.pklxxxx").unwrap();
        // A numpy .npz is a ZIP too, but not a pickle.
        let npz = dir.path().join("arrays.npz");
        std::fs::write(&npz, b"PK\x03\x04\0\0\0\0noise.npy").unwrap();
        let npy = dir.path().join("real.npy");
        std::fs::write(&npy, b"\x93NUMPY\x01\x00").unwrap();
        for (path, pickled) in [
            (&named, true),
            (&legacy, true),
            (&zipped, true),
            (&npz, false),
            (&npy, false),
        ] {
            assert_eq!(is_pickle(path), pickled, "{}", path.display());
        }
        let msg = pickle_error(&named, ARRAY_ADVICE).to_string();
        assert!(
            msg.contains("noise.PT") && msg.contains("pickle") && msg.contains("np.save"),
            "{msg}"
        );
    }
}
